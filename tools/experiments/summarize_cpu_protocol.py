"""Tables and curves of the CPU protocol, computed from its results files.

    python tools/experiments/summarize_cpu_protocol.py [--results DIR]
        [--write | --check]

Reads ``results/cpu_protocol/<method>_seed<k>.json`` (written by
``cpu_protocol.py``) and prints the Markdown of the results: the deployed
network's (the teacher's) final and best-epoch top-1 per method as mean and
standard deviation over the seeds, the per-seed figures, and the paired
differences to the baseline, seed by seed. ``--write`` puts the summary into
README.md and docs/experiments.md between their ``cpu_protocol`` markers and
draws docs/experiments/cpu_protocol_curves.png; ``--check`` exits 1 if the
Markdown there differs from what the files give.
"""
import argparse
import glob
import json
import os.path as osp
import re
import statistics
import sys
from typing import Dict, List, Optional

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
METHODS = ('baseline', 'teskd', 'dtskd')
# Diagnostic runs, each with the run it is compared with (same seed).
DIAGNOSTICS = {'teskd-ce0.8': 'baseline', 'teskd-60e': 'baseline-60e',
               'baseline-60e': 'baseline'}
NAMES = dict(baseline='baseline', teskd='TESKD', dtskd='DTSKD')
NAMES.update({
    'teskd-ce0.8': 'TESKD, CE 0.8 / KD 0.2',
    'teskd-60e': 'TESKD, 60 epochs',
    'baseline-60e': 'baseline, 60 epochs'
})
SEEDS = (0, 1, 2)
FIGURE = osp.join('docs', 'experiments', 'cpu_protocol_curves.png')
TARGETS = {  # marker name: file
    'cpu_protocol:readme': 'README.md',
    'cpu_protocol:details': osp.join('docs', 'experiments.md'),
    'cpu_protocol:diagnostics': osp.join('docs', 'experiments.md'),
}


def load(results: str) -> Dict[str, Dict[int, dict]]:
    """The completed runs, by method and seed."""
    runs: Dict[str, Dict[int, dict]] = {
        m: {} for m in METHODS + tuple(DIAGNOSTICS)}
    for path in sorted(glob.glob(osp.join(results, '*_seed*.json'))):
        with open(path) as f:
            run = json.load(f)
        if run.get('protocol') and run['method'] in runs:
            runs[run['method']][int(run['seed'])] = run
    return runs


def final(run: dict, key: str = 'top1') -> float:
    """The figure of the last validation (after the last epoch)."""
    last = run['val'][-1]
    assert last['epoch'] == run['epochs'], (run['method'], run['seed'])
    return last[key]


def best(run: dict) -> tuple:
    """The best teacher top-1 of the run and its epoch."""
    entry = max(run['val'], key=lambda v: (v['top1'], -v['epoch']))
    return entry['top1'], entry['epoch']


def mean_sd(values: List[float]) -> str:
    if not values:
        return 'n/a'
    if len(values) == 1:
        return f'{values[0]:.2f} (1 seed)'
    return (f'{statistics.mean(values):.2f} ± '
            f'{statistics.stdev(values):.2f}')


def spread(values: List[float]) -> str:
    """Mean, standard deviation and range of paired differences."""
    if not values:
        return 'n/a'
    text = f'{statistics.mean(values):+.2f}'
    if len(values) > 1:
        text += (f' ± {statistics.stdev(values):.2f} (from '
                 f'{min(values):+.2f} to {max(values):+.2f})')
    return text


def progress(runs) -> str:
    done = sum(len(runs[m]) for m in METHODS)
    if done == len(METHODS) * len(SEEDS):
        return ''
    missing = [f'{NAMES[m]} seed {s}' for s in SEEDS for m in METHODS
               if s not in runs[m]]
    return (f'\n**{done} of {len(METHODS) * len(SEEDS)} runs are complete**; '
            f'not yet run: {", ".join(missing)}. The figures below cover '
            'the completed runs only.\n')


def readme_block(runs) -> str:
    """The summary table of README's Results."""
    lines = [progress(runs),
             '| method | final top-1 (%) | best-epoch top-1 (%) | '
             'paired difference to the baseline, final (points) | seeds |',
             '| --- | ---: | ---: | ---: | ---: |']
    for m in METHODS:
        seeds = sorted(runs[m])
        finals = [final(runs[m][s]) for s in seeds]
        bests = [best(runs[m][s])[0] for s in seeds]
        diffs = [final(runs[m][s]) - final(runs['baseline'][s])
                 for s in seeds if s in runs['baseline']]
        diff = '' if m == 'baseline' else spread(diffs)
        lines.append(f'| {NAMES[m]} | {mean_sd(finals)} | {mean_sd(bests)} '
                     f'| {diff} | {len(seeds)} |')
    return '\n'.join(lines).strip('\n') + '\n'


def details_block(runs) -> str:
    """Per-seed figures, paired differences and the cost of each run."""
    out = [progress(runs), '### Per seed', '',
           '| method | seed | final top-1 | best top-1 (epoch) | students '
           'final (1 / 2 / 3) | ensemble final | wall time | resumed |',
           '| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |']
    for m in METHODS:
        for s in sorted(runs[m]):
            run = runs[m][s]
            b, e = best(run)
            last = run['val'][-1]
            students = ' / '.join(
                f'{last[f"student{i}_top1"]:.2f}' for i in (1, 2, 3)
                if f'student{i}_top1' in last) or '-'
            ensemble = f'{last["ensemble_top1"]:.2f}' \
                if 'ensemble_top1' in last else '-'
            out.append(
                f'| {NAMES[m]} | {s} | {final(run):.2f} | {b:.2f} ({e}) | '
                f'{students} | {ensemble} | {run["wall_s"] / 60:.0f} min | '
                f'{"yes" if run["resumed"] else "no"} |')
    out += ['', '### Paired differences (method - baseline, same seed, '
            'points of final top-1)', '',
            '| method | ' + ' | '.join(f'seed {s}' for s in SEEDS) +
            ' | mean ± sd |', '| --- |' + ' ---: |' * (len(SEEDS) + 1)]
    for m in METHODS[1:]:
        diffs = {s: final(runs[m][s]) - final(runs['baseline'][s])
                 for s in SEEDS if s in runs[m] and s in runs['baseline']}
        cells = [f'{diffs[s]:+.2f}' if s in diffs else 'n/a' for s in SEEDS]
        out.append(f'| {NAMES[m]} | ' + ' | '.join(cells) +
                   f' | {spread(list(diffs.values()))} |')
    total = sum(r['wall_s'] for v in runs.values() for r in v.values())
    machines = sorted({f'{r["machine"]["cpu"]}, {r["machine"]["cores"]} '
                       f'cores, torch {r["machine"]["torch"]}'
                       for v in runs.values() for r in v.values()})
    out += ['', f'Wall time of all completed runs (diagnostic ones included): '
            f'{total / 3600:.1f} h in '
            f'all, on {"; ".join(machines) or "n/a"}.']
    return '\n'.join(out).strip('\n') + '\n'


def loss_block(runs) -> List[str]:
    """TESKD's loss terms per epoch against the baseline's cross-entropy,
    mean over the seeds: how much of the teacher's signal is the label."""
    teskd, base = runs['teskd'], runs['baseline']
    if not teskd or not base:
        return []

    def per_epoch(run_set, key, scale=1.0):
        table = {}
        for run in run_set.values():
            for entry in run['train_epoch_losses']:
                if key(entry) is not None:
                    table.setdefault(entry['epoch'], []).append(
                        key(entry) / scale)
        return {e: statistics.mean(v) for e, v in table.items()}

    ce_w = 0.2  # the protocol's TESKD loss weights: CE 0.2, KD 0.8
    teacher_ce = per_epoch(teskd, lambda e: e.get('loss_ce_teacher'), ce_w)
    student_ce = per_epoch(teskd, lambda e: e.get('loss_ce_student3'), ce_w)
    kd = per_epoch(teskd, lambda e: sum(
        v for k, v in e.items() if k.startswith('loss_kd_')) or None)
    fea = per_epoch(teskd, lambda e: sum(
        v for k, v in e.items() if k.startswith('loss_fea_')) or None)
    base_ce = per_epoch(base, lambda e: e.get('loss'))
    epochs = [e for e in (1, 5, 10, 15, 16, 20, 24, 25, 30)
              if e in teacher_ce and e in base_ce]
    out = ['| epoch | baseline CE | TESKD teacher CE (unweighted; weight '
           '0.2) | student 3 CE (unweighted) | KD, 3 students (weighted '
           '0.8) | feature (weighted) |',
           '| ---: | ---: | ---: | ---: | ---: | ---: |']
    for e in epochs:
        out.append(f'| {e} | {base_ce[e]:.3f} | {teacher_ce[e]:.3f} | '
                   f'{student_ce.get(e, float("nan")):.3f} | '
                   f'{kd.get(e, float("nan")):.3f} | '
                   f'{fea.get(e, float("nan")):.4f} |')
    return out


def diagnostics_block(runs) -> str:
    """The diagnostic runs against the run each is compared with, and
    TESKD's loss terms per epoch."""
    out = ['### Diagnostic runs', '']
    found = [m for m in DIAGNOSTICS if runs[m]]
    if not found:
        out.append('None has been run yet.')
    else:
        out += ['| run | seed | final top-1 | best top-1 (epoch) | compared '
                'with | its final top-1 | difference |',
                '| --- | ---: | ---: | ---: | --- | ---: | ---: |']
        for m in found:
            ref = DIAGNOSTICS[m]
            for s in sorted(runs[m]):
                b, e = best(runs[m][s])
                other = runs[ref].get(s)
                theirs = f'{final(other):.2f}' if other else 'n/a'
                diff = f'{final(runs[m][s]) - final(other):+.2f}' \
                    if other else 'n/a'
                out.append(f'| {NAMES[m]} | {s} | {final(runs[m][s]):.2f} | '
                           f'{b:.2f} ({e}) | {NAMES[ref]} | {theirs} | '
                           f'{diff} |')
    losses = loss_block(runs)
    if losses:
        out += ['', '### Loss terms per epoch (training means, mean over '
                'seeds)', ''] + losses
    return '\n'.join(out).strip('\n') + '\n'


def draw(runs, path: str) -> None:
    """Teacher top-1 per validated epoch, mean over the seeds."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for m in METHODS:
        if not runs[m]:
            continue
        epochs = [v['epoch'] for v in next(iter(runs[m].values()))['val']]
        means = [statistics.mean(
            [next(v['top1'] for v in r['val'] if v['epoch'] == e)
             for r in runs[m].values()]) for e in epochs]
        ax.plot(epochs, means, marker='o',
                label=f'{NAMES[m]} ({len(runs[m])} '
                f'seed{"s" if len(runs[m]) > 1 else ""})')
    ax.set_xlabel('epoch')
    ax.set_ylabel('test top-1 of the deployed network (%)')
    ax.set_title('CPU protocol: CIFAR-10 JPEG, 10k images, ResNet-18 x1/4')
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def replace_block(text: str, marker: str, block: str) -> Optional[str]:
    pattern = re.compile(rf'(<!-- {re.escape(marker)} -->\n).*?'
                         rf'(<!-- /{re.escape(marker)} -->)', re.S)
    if not pattern.search(text):
        return None
    return pattern.sub(lambda m: m.group(1) + block + m.group(2), text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--results',
                        default=osp.join(ROOT, 'results', 'cpu_protocol'))
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument('--write', action='store_true',
                      help='update README.md, docs/experiments.md and the '
                      'figure')
    mode.add_argument('--check', action='store_true',
                      help='exit 1 if README.md or docs/experiments.md '
                      'differ from the results files')
    args = parser.parse_args(argv)
    runs = load(args.results)
    blocks = {'cpu_protocol:readme': readme_block(runs),
              'cpu_protocol:details': details_block(runs),
              'cpu_protocol:diagnostics': diagnostics_block(runs)}
    if not (args.write or args.check):
        print('\n'.join(blocks.values()))
        return 0
    stale = []
    for marker, name in TARGETS.items():
        path = osp.join(ROOT, name)
        with open(path) as f:
            text = f.read()
        new = replace_block(text, marker, blocks[marker])
        if new is None:
            print(f'{name} has no <!-- {marker} --> ... <!-- /{marker} --> '
                  'block', file=sys.stderr)
            return 2
        if new != text:
            stale.append(f'{name} ({marker})')
            if args.write:
                with open(path, 'w') as f:
                    f.write(new)
    if args.write:
        draw(runs, osp.join(ROOT, FIGURE))
        print(f'updated {", ".join(stale) or "nothing (up to date)"}; drew '
              f'{FIGURE}')
        return 0
    if stale:
        print(f'{", ".join(stale)} differ from {args.results}: run '
              'tools/experiments/summarize_cpu_protocol.py --write',
              file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
