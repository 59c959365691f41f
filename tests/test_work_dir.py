"""One run per work dir; resume continues that run or refuses.

Real ``tools/train.py`` processes on the tiny config: a second run on a
busy work dir stops at once naming the first, which finishes unharmed; a
new run never starts over an earlier run's checkpoints (so ``--resume``
there can only continue that run), unless ``--force`` moves them aside; a
resume whose config no longer fits the checkpoint stops before anything is
written.
"""
import hashlib
import os
import os.path as osp
import re
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from teskd_mm.utils.work_dir import lock_work_dir, release

from conftest import (ROOT, free_port, run_tool, tool_in_process,
                      write_tiny_config)

ENV = dict(os.environ, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1')


def digest(folder):
    """Name -> sha1 of every file in a folder (not recursive), but the lock
    file, which each run that takes the lock rewrites."""
    return {
        n: hashlib.sha1(open(osp.join(folder, n), 'rb').read()).hexdigest()
        for n in sorted(os.listdir(folder))
        if osp.isfile(osp.join(folder, n)) and n != '.train.lock'
    }


def run_dirs(work):
    """The timestamped log folders the Runner made, one per started run."""
    return sorted(d for d in os.listdir(work)
                  if re.match(r'^\d{8}_\d{6}$', d))


@pytest.fixture(scope='module')
def tiny(tmp_path_factory, cifar10_mini):
    tmp = tmp_path_factory.mktemp('work_dir')
    return write_tiny_config(
        str(tmp / 'tiny.py'), cifar10_mini, '''
        train_dataloader = dict(dataset=dict(indices=16))
        val_dataloader = dict(dataset=dict(indices=8))
        train_cfg = dict(max_epochs=2)
        ''')


@pytest.fixture(scope='module')
def finished(tiny, tmp_path_factory):
    """A run that was busy while a second one tried its work dir."""
    work = str(tmp_path_factory.mktemp('busy') / 'work')
    log = open(work + '.log', 'w')
    first = subprocess.Popen(
        [sys.executable, 'tools/train.py', tiny, '--work-dir', work,
         '--cfg-options', 'train_cfg.max_epochs=30'],
        cwd=ROOT, env=ENV, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while 'Epoch(train)' not in open(work + '.log').read():
        assert first.poll() is None, open(work + '.log').read()[-3000:]
        assert time.time() < deadline
        time.sleep(0.05)
    # A second run, and a second launch of two processes, at once.
    launch = subprocess.Popen(
        ['bash', 'tools/dist_train.sh', tiny, '2', '--work-dir', work],
        cwd=ROOT, env=dict(ENV, PYTHON=sys.executable, PORT=free_port()),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    second = run_tool('tools/train.py', tiny, '--work-dir', work,
                      check=False, env=ENV)
    launched = launch.communicate(timeout=300)[0]
    assert first.wait(timeout=600) == 0, open(work + '.log').read()[-3000:]
    return work, first.pid, second, (launch.returncode, launched)


def test_second_run_on_a_busy_work_dir_stops_naming_the_first(finished):
    work, pid, second, _ = finished
    assert second.returncode != 0
    assert re.search(rf'train.py: error: \S+ is in use by another training '
                     rf'run \(pid {pid} on \S+, started [\d\-T:]+: '
                     r'\S*tools/train.py', second.stderr), second.stderr
    # The first finished unharmed, alone in its work dir.
    assert 'epoch_30.pth' in os.listdir(work)
    assert len(run_dirs(work)) == 1


def test_second_launch_of_two_processes_stops_too(finished):
    _, pid, _, (returncode, log) = finished
    assert returncode != 0
    assert re.search(rf'train.py: error: \S+ is in use by another training '
                     rf'run \(pid {pid} ', log), log[-3000:]


def test_new_run_refuses_an_earlier_runs_checkpoints(finished, tiny):
    work = finished[0]
    before = digest(work)
    proc = run_tool('tools/train.py', tiny, '--work-dir', work,
                    '--cfg-options', 'randomness.seed=1', check=False,
                    env=ENV)
    assert proc.returncode != 0
    assert re.search(r'holds the checkpoints of an earlier run \(best_\S+, '
                     r'epoch_28.pth, epoch_29.pth, epoch_30.pth, ...\); '
                     r'continue that run with --resume, train into another '
                     r'--work-dir, or pass --force', proc.stderr), proc.stderr
    assert digest(work) == before
    assert len(run_dirs(work)) == 1


def test_force_moves_the_earlier_run_aside(tiny, tmp_path):
    work = str(tmp_path / 'work')
    run_tool('tools/train.py', tiny, '--work-dir', work, env=ENV)
    earlier = digest(work)
    proc = run_tool('tools/train.py', tiny, '--work-dir', work, '--force',
                    '--cfg-options', 'randomness.seed=1',
                    'train_cfg.max_epochs=1', env=ENV)
    aside = re.search(r"earlier run's files are in (\S+)\.\n",
                      proc.stdout + proc.stderr)
    assert aside, proc.stderr
    moved = digest(aside.group(1))
    for name in ('epoch_1.pth', 'epoch_2.pth', 'last_checkpoint'):
        assert moved[name] == earlier[name], name
    # The new run's own checkpoint, and last_checkpoint naming it.
    assert sorted(n for n in os.listdir(work) if n.startswith('epoch_')) \
        == ['epoch_1.pth']
    assert open(osp.join(work, 'last_checkpoint')).read() == \
        osp.join(work, 'epoch_1.pth')


def test_ordinary_resume_is_quiet_and_continues(finished, tiny):
    work = finished[0]
    proc = run_tool('tools/train.py', tiny, '--work-dir', work, '--resume',
                    '--cfg-options', 'train_cfg.max_epochs=31', env=ENV)
    log = proc.stdout + proc.stderr
    assert 'Resuming from' not in log  # no fallback, no warning
    assert re.search(r'Auto resumed from the latest checkpoint|resumed '
                     r'epoch: 30, iter: 120', log)
    assert 'epoch_31.pth' in os.listdir(work)


def test_resume_with_a_changed_model_stops_before_writing(tiny, tmp_path):
    work = str(tmp_path / 'work')
    run_tool('tools/train.py', tiny, '--work-dir', work, '--cfg-options',
             'train_cfg.max_epochs=1', env=ENV)
    before = digest(work)
    changes = [
        (['model.neck.fusion=add'], r'the model config changed since '
         r"training: model.neck.fusion is 'mixed' in training and 'add' "
         r'here; 18 weights are not in the model'),
        (['model.neck.students=[2,3]', 'model.head.students=[2,3]'],
         r'the model config changed since training: model.head.students is '
         r'\[1, 2, 3\] in training and \[2, 3\] here; model.neck.students'),
        # Caught earlier, by the data set's class count.
        (['model.head.num_classes=7'], r'num_classes=7 but '
         r'train_dataloader.dataset has 10 classes'),
    ]
    for options, message in changes:
        with pytest.raises(SystemExit) as info:
            tool_in_process('train.py', tiny, '--work-dir', work, '--resume',
                            '--cfg-options', *options)
        assert re.search(message, str(info.value.code)), info.value.code
    # Nothing written: the saved config and checkpoints are as they were.
    assert digest(work) == before
    assert len(run_dirs(work)) == 1


FORKED_HOLDER = textwrap.dedent('''
    import os, sys, time
    from teskd_mm.utils.work_dir import lock_work_dir
    lock = lock_work_dir(sys.argv[1])
    child = os.fork()
    if child == 0:  # a data-loader worker, left behind by a killed run
        # Off the parent's pipes, which the test reads to their end.
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        time.sleep(120)
        os._exit(0)
    print(child, flush=True)
    os._exit(0)  # killed, as far as the lock is concerned
    ''')


def test_the_lock_is_the_main_process_s_alone(tmp_path):
    """A forked child of the run, alive after the run died, does not keep
    the work dir from the next run (its --resume)."""
    work = str(tmp_path / 'work')
    holder = subprocess.run([sys.executable, '-c', FORKED_HOLDER, work],
                            cwd=ROOT, env=ENV, capture_output=True,
                            text=True, timeout=300)
    assert holder.returncode == 0, holder.stderr[-2000:]
    child = int(holder.stdout.split()[0])
    try:
        assert osp.exists(f'/proc/{child}')  # still alive, lock file open
        release(lock_work_dir(work))
    finally:
        os.kill(child, signal.SIGKILL)
