"""Run the CPU protocol: baseline, TESKD and DTSKD on 10,000 CIFAR-10 JPEGs.

    python tools/experiments/cpu_protocol.py [--methods baseline teskd dtskd]
        [--seeds 0 1 2] [--threads N]

The protocol is fixed in docs/experiments.md and its three configs in
configs/experiments/cpu_protocol/. Each run trains through tools/train.py in
its own process, in ``--work-root/<method>_seed<k>``; a run that was stopped
is resumed from its latest checkpoint, and a run whose results file exists is
skipped. When a run ends, its scalars (validation top-1 of the teacher,
students and ensemble per validated epoch, the training losses) are written
to ``--results/<method>_seed<k>.json``; checkpoints and data stay out of it.

``--n-train``, ``--n-test`` and ``--epochs`` shrink the protocol (to try the
command on a few images); such runs are marked in their results as not the
protocol, and are refused in the protocol's results folder.
"""
import argparse
import datetime
import glob
import json
import os
import os.path as osp
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from typing import Dict, List, Optional

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = osp.join(ROOT, 'configs', 'experiments', 'cpu_protocol')
METHODS = ('baseline', 'teskd', 'dtskd')
# Runs that look into a result, beside the protocol's (docs/experiments.md):
# TESKD with the ImageNet recipe's weights (CE 0.8, KD 0.2), and TESKD and
# the baseline at twice the epochs.
DIAGNOSTICS = ('teskd-ce0.8', 'teskd-60e', 'baseline-60e')
PROTOCOL = dict(n_train=1000, n_test=None, epochs=None)
DEFAULT_RESULTS = osp.join('results', 'cpu_protocol')


def config_of(method: str) -> str:
    """The protocol's config of a method."""
    return osp.join(CONFIGS, f'{method}_resnet18-w16_cifar10jpg-1k.py')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Baseline, TESKD and DTSKD under the CPU protocol '
        '(docs/experiments.md), each run resumable and skipped when done.')
    parser.add_argument('--methods', nargs='+', default=list(METHODS),
                        choices=METHODS + DIAGNOSTICS,
                        help='methods to run, in order (default: the '
                        'protocol\'s three)')
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2],
                        help='seeds to run')
    parser.add_argument(
        '--data-tar', default=osp.join(ROOT, '..', 'shared', 'data',
                                       'cifar10-jpg.tar.gz'),
        help='CIFAR-10 JPEG archive (cifar10-jpg/train/<class>/ and '
        'cifar10-jpg/test/<class>/)')
    parser.add_argument(
        '--data-root',
        help='an extracted folder with train/<class>/ and test/<class>/ '
        '(instead of --data-tar)')
    parser.add_argument('--work-root', default=osp.join('work_dirs',
                                                        'cpu_protocol'),
                        help='where the runs, their checkpoints and the '
                        'data subset live')
    parser.add_argument('--results', default=DEFAULT_RESULTS,
                        help='folder of the results files')
    parser.add_argument('--threads', type=int,
                        help='CPU threads of each training process '
                        '(OMP_NUM_THREADS); does not change the protocol')
    parser.add_argument('--n-train', type=int, default=PROTOCOL['n_train'],
                        help='training images per class (protocol: 1000)')
    parser.add_argument('--n-test', type=int,
                        help='test images per class (protocol: all)')
    parser.add_argument('--epochs', type=int,
                        help='epochs (protocol: the config\'s, 30 or 60); '
                        'a schedule given here validates after every epoch')
    args = parser.parse_args(argv)
    for name in ('threads', 'n_train', 'n_test', 'epochs'):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f'--{name.replace("_", "-")} {value} must be at '
                         'least 1')
    if args.data_root is None and not osp.isfile(args.data_tar):
        parser.error(f'no data archive {args.data_tar}: give --data-tar '
                     '(cifar10-jpg.tar.gz) or --data-root (a folder with '
                     'train/<class>/ and test/<class>/)')
    if args.data_root is not None:
        for split in ('train', 'test'):
            if not osp.isdir(osp.join(args.data_root, split)):
                parser.error(f'--data-root {args.data_root} has no {split}/ '
                             'folder: it must hold train/<class>/ and '
                             'test/<class>/')
    args.protocol = (args.n_train == PROTOCOL['n_train']
                     and args.n_test == PROTOCOL['n_test']
                     and args.epochs == PROTOCOL['epochs'])
    if not args.protocol and osp.normpath(args.results) == osp.normpath(
            DEFAULT_RESULTS):
        parser.error('--n-train, --n-test or --epochs differ from the '
                     f'protocol: write their results elsewhere than '
                     f'{DEFAULT_RESULTS} (--results DIR)')
    return args


def _classes(folder: str) -> List[str]:
    return sorted(d for d in os.listdir(folder)
                  if osp.isdir(osp.join(folder, d)))


def _extract(tar_path: str, dest: str) -> str:
    """The archive's top folder under ``dest``, extracted once."""
    with tarfile.open(tar_path) as tar:
        top = tar.getmembers()[0].name.split('/')[0]
        target = osp.join(dest, top)
        if osp.isdir(target):
            return target
        tmp = tempfile.mkdtemp(dir=dest, prefix='.extract-')
        # The 'data' filter refuses links and paths outside the folder.
        tar.extractall(tmp, filter='data')
    os.replace(osp.join(tmp, top), target)
    os.rmdir(tmp)
    return target


def prepare_data(source: str, dest: str, n_train: int,
                 n_test: Optional[int]) -> Dict[str, object]:
    """The first ``n`` images of every class (sorted file names) in ``dest``.

    Built in a temporary folder and renamed into place, so an interrupted
    preparation leaves nothing half-made. Files are hard links where the
    file system allows. Returns the subset's description.
    """
    if not osp.isdir(dest):
        tmp = tempfile.mkdtemp(dir=osp.dirname(dest), prefix='.subset-')
        for split, n in (('train', n_train), ('test', n_test)):
            for cls in _classes(osp.join(source, split)):
                src_dir = osp.join(source, split, cls)
                files = sorted(os.listdir(src_dir))[:n]
                dst_dir = osp.join(tmp, split, cls)
                os.makedirs(dst_dir)
                for name in files:
                    try:
                        os.link(osp.join(src_dir, name),
                                osp.join(dst_dir, name))
                    except OSError:
                        shutil.copy2(osp.join(src_dir, name), dst_dir)
        os.replace(tmp, dest)
    info: Dict[str, object] = {}
    for split in ('train', 'test'):
        counts = {
            cls: len(os.listdir(osp.join(dest, split, cls)))
            for cls in _classes(osp.join(dest, split))
        }
        info[split] = dict(images=sum(counts.values()), per_class=counts)
    return info


def read_scalars(work_dir: str) -> Dict[str, list]:
    """Training and validation scalars of every launch of a run.

    mmengine writes ``<timestamp>/vis_data/scalars.json`` per launch. A
    resumed launch repeats the steps after its checkpoint; the later
    launch's entries replace the earlier's, so a resumed run reads as an
    uninterrupted one.
    """
    train: Dict[int, dict] = {}
    val: Dict[int, dict] = {}
    for path in sorted(glob.glob(osp.join(work_dir, '*', 'vis_data',
                                          'scalars.json'))):
        with open(path) as f:
            for line in f:
                entry = json.loads(line)
                if any(k.startswith('accuracy/') for k in entry):
                    val[int(entry['step'])] = {
                        'epoch': int(entry['step']),
                        **{k.split('/', 1)[1]: v
                           for k, v in entry.items()
                           if k.startswith('accuracy/')}
                    }
                elif 'lr' in entry:
                    # Losses, lr and DTSKD's hist_alpha; not the timings.
                    train[int(entry['iter'])] = {
                        k: v for k, v in entry.items()
                        if k not in ('time', 'data_time', 'memory', 'step')
                    }
    return dict(val=[val[k] for k in sorted(val)],
                train=[train[k] for k in sorted(train)])


def epoch_losses(train: List[dict]) -> List[dict]:
    """Mean of each logged loss per epoch (the log holds window means)."""
    epochs: Dict[int, Dict[str, List[float]]] = {}
    for entry in train:
        losses = epochs.setdefault(int(entry['epoch']), {})
        for k, v in entry.items():
            if 'loss' in k:
                losses.setdefault(k, []).append(v)
    return [
        dict(epoch=e, **{k: sum(v) / len(v) for k, v in losses.items()})
        for e, losses in sorted(epochs.items())
    ]


def machine() -> Dict[str, object]:
    import torch
    cpu = platform.processor()
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next(line.split(':', 1)[1].strip() for line in f
                       if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    return dict(cpu=cpu, cores=os.cpu_count(), torch=torch.__version__,
                python=platform.python_version())


def git_commit() -> Optional[str]:
    """The commit the runs train with; '-dirty' where files differ from it."""
    try:
        commit = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=ROOT,
                                capture_output=True, text=True,
                                check=True).stdout.strip()
        changed = subprocess.run(
            ['git', 'status', '--porcelain', '--untracked-files=no'],
            cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ('-dirty' if changed.strip() else '')


def launches_file(work_dir: str) -> str:
    return osp.join(work_dir, 'protocol_launches.json')


def read_launches(work_dir: str) -> List[dict]:
    if not osp.isfile(launches_file(work_dir)):
        return []
    with open(launches_file(work_dir)) as f:
        return json.load(f)


def write_json(path: str, obj) -> None:
    tmp = f'{path}.tmp'
    with open(tmp, 'w') as f:
        json.dump(obj, f, indent=1)
        f.write('\n')
    os.replace(tmp, path)


def log_launches(work_dir: str) -> List[dict]:
    """Every launch of a run, from the log folder mmengine makes for each
    (``<YYYYmmdd_HHMMSS>/<same>.log``): its start, and its end as the log's
    last write. A launch that was killed has its folder too."""
    found = []
    for name in sorted(os.listdir(work_dir)):
        log = osp.join(work_dir, name, f'{name}.log')
        if not (re.match(r'^\d{8}_\d{6}$', name) and osp.isfile(log)):
            continue
        start = datetime.datetime.strptime(name, '%Y%m%d_%H%M%S')
        end = datetime.datetime.fromtimestamp(osp.getmtime(log))
        found.append(dict(log=name, started=start.isoformat(),
                          wall_s=round((end - start).total_seconds(), 1)))
    return found


def _naive(stamp: str) -> datetime.datetime:
    """A recorded time as the machine's local time, as mmengine's folders
    name it."""
    moment = datetime.datetime.fromisoformat(stamp)
    if moment.tzinfo is not None:
        moment = moment.astimezone().replace(tzinfo=None)
    return moment


def describe_launches(work_dir: str) -> List[dict]:
    """The launches of the logs, each with what this command recorded when
    it started it (commit, threads), where it did."""
    records = read_launches(work_dir)
    described = []
    for launch in log_launches(work_dir):
        start = datetime.datetime.fromisoformat(launch['started'])
        match = [r for r in records
                 if abs((_naive(r['started']) - start).total_seconds()) < 120]
        if match:
            launch.update({k: v for k, v in match[-1].items()
                           if k not in launch})
        else:
            launch['note'] = 'started before launches were recorded'
        described.append(launch)
    return described


def epochs_of(args: argparse.Namespace, method: str) -> int:
    """The epochs a run trains: ``--epochs``, else its config's."""
    from mmengine.config import Config
    return args.epochs or Config.fromfile(
        config_of(method)).train_cfg.max_epochs


def write_result(args: argparse.Namespace, method: str, seed: int,
                 work_dir: str, result_path: str, data_info: dict) -> bool:
    """Write the results file of a finished run; False if unfinished."""
    scalars = read_scalars(work_dir)
    epochs = [v['epoch'] for v in scalars['val']]
    last = epochs_of(args, method)
    if not epochs or epochs[-1] != last:
        return False
    launches = describe_launches(work_dir)
    result = dict(
        method=method,
        seed=seed,
        config=osp.relpath(config_of(method), ROOT),
        protocol=args.protocol,
        epochs=last,
        data=data_info,
        machine=machine(),
        launches=launches,
        wall_s=round(sum(la['wall_s'] for la in launches), 1),
        resumed=len(launches) > 1,
        val=scalars['val'],
        train_epoch_losses=epoch_losses(scalars['train']),
        train=scalars['train'])
    write_json(result_path, result)
    print(f'[cpu_protocol] {method}_seed{seed}: top-1 '
          f'{scalars["val"][-1]["top1"]:.2f} after epoch {last}; '
          f'wrote {result_path}', flush=True)
    return True


def run_one(args: argparse.Namespace, method: str, seed: int, data: str,
            data_info: dict) -> None:
    # Local: the package's import prints library warnings, and the
    # argument checks above should answer before that.
    from teskd_mm.utils.checkpoint import last_checkpoint

    name = f'{method}_seed{seed}'
    result_path = osp.join(args.results, f'{name}.json')
    if osp.isfile(result_path):
        print(f'[cpu_protocol] {name}: done ({result_path}), skipped',
              flush=True)
        return
    work_dir = osp.join(args.work_root, name)
    os.makedirs(work_dir, exist_ok=True)
    # Trained to the end before its results were written: written now.
    if write_result(args, method, seed, work_dir, result_path, data_info):
        return
    resume_from = last_checkpoint(work_dir)
    n_train = data_info['train']['images']
    options = [f'randomness.seed={seed}']
    if method == 'dtskd':
        # One memory row per training image.
        options.append(f'model.head.loss.num_samples={n_train}')
    if args.epochs:
        options += [f'train_cfg.max_epochs={args.epochs}',
                    'train_cfg.val_interval=1',
                    f'param_scheduler.milestones=[{args.epochs}]']
    cmd = [sys.executable, osp.join(ROOT, 'tools', 'train.py'),
           config_of(method), '--work-dir', work_dir]
    if resume_from:
        cmd.append('--resume')
    cmd += ['--cfg-options', *options]
    env = dict(os.environ, CIFAR10JPG_ROOT=data)
    if args.threads:
        env['OMP_NUM_THREADS'] = str(args.threads)
    # Waiting OpenMP threads sleep instead of spinning: beside other work
    # on 2 cores, a TESKD step took 8.3 s spinning and 2.0 s passive
    # (1.4 s either way on an idle machine; docs/experiments.md).
    env.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
    print(f'[cpu_protocol] {name}: ' +
          (f'resuming from {resume_from}' if resume_from else 'starting'),
          flush=True)
    # Recorded before the launch, so that a killed one keeps its record.
    launches = read_launches(work_dir)
    launches.append(dict(
        started=datetime.datetime.now().isoformat(timespec='seconds'),
        resumed_from=osp.basename(resume_from) if resume_from else None,
        threads=args.threads, omp_wait_policy=env['OMP_WAIT_POLICY'],
        commit=git_commit(), exit_code=None))
    write_json(launches_file(work_dir), launches)
    code = subprocess.call(cmd, env=env)
    launches[-1]['exit_code'] = code
    write_json(launches_file(work_dir), launches)
    if code != 0:
        sys.exit(f'[cpu_protocol] {name}: tools/train.py exited with {code}; '
                 f'run the same command again to resume it from '
                 f'{work_dir}')
    if not write_result(args, method, seed, work_dir, result_path,
                        data_info):
        sys.exit(f'[cpu_protocol] {name}: training ended but the log of '
                 f'{work_dir} has no validation of its last epoch; '
                 f'not writing {result_path}')


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    os.makedirs(args.work_root, exist_ok=True)
    os.makedirs(args.results, exist_ok=True)
    source = args.data_root or _extract(args.data_tar, args.work_root)
    subset = f'data_train{args.n_train}_test{args.n_test or "all"}'
    data = osp.abspath(osp.join(args.work_root, subset))
    data_info = prepare_data(source, data, args.n_train, args.n_test)
    for seed in args.seeds:
        for method in args.methods:
            run_one(args, method, seed, data, data_info)


if __name__ == '__main__':
    main()
