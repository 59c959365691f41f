"""Kill a real training process, resume it, and get the same weights.

The run keeps one checkpoint (``max_keep_ckpts=1``), the setting in which
mmengine's own hook deletes the only good checkpoint before writing the
next one.
"""
import os
import os.path as osp
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import torch

from mmengine.runner.checkpoint import save_checkpoint

from teskd_mm.utils import checkpoint_problem

from conftest import ROOT, write_tiny_config

ENV = dict(os.environ, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1')


def start_training(cfg, work, *args):
    log = open(work + '.log', 'w')
    return subprocess.Popen(
        [sys.executable, 'tools/train.py', cfg, '--work-dir', work, *args],
        cwd=ROOT, env=ENV, stdout=log, stderr=subprocess.STDOUT)


def wait_for(proc, log_path, pattern, timeout=300):
    """Poll the log of a running process until ``pattern`` appears."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        with open(log_path) as f:
            if re.search(pattern, f.read()):
                return True
        if proc.poll() is not None:
            return False
        time.sleep(0.02)
    raise TimeoutError(pattern)


def weights(path):
    return torch.load(path, map_location='cpu', weights_only=False)


@pytest.fixture(scope='module')
def runs(tmp_path_factory, cifar10_mini):
    """An uninterrupted run of 2 epochs and one SIGKILLed in its second."""
    tmp = tmp_path_factory.mktemp('resume')
    cfg = write_tiny_config(
        str(tmp / 'tiny.py'), cifar10_mini, '''
        default_hooks = dict(checkpoint=dict(max_keep_ckpts=1))
        train_dataloader = dict(batch_size=8)
        val_dataloader = dict(batch_size=20)
        train_cfg = dict(max_epochs=2)
        ''')
    ref_work, work = str(tmp / 'uninterrupted'), str(tmp / 'killed')
    victim = start_training(cfg, work)
    reached = []

    def kill_in_second_epoch():
        reached.append(
            wait_for(victim, work + '.log', r'Epoch\(train\) \[2\]\[\s*3/'))
        victim.send_signal(signal.SIGKILL)

    killer = threading.Thread(target=kill_in_second_epoch)
    killer.start()
    # Meanwhile, the reference run, in a process of its own like the resumed
    # one, so no setting left behind by other tests in this process can
    # change its arithmetic.
    reference = start_training(cfg, ref_work)
    assert reference.wait(timeout=600) == 0, \
        open(ref_work + '.log').read()[-3000:]
    killer.join()
    victim.wait()
    assert reached == [True] and victim.returncode == -signal.SIGKILL
    return cfg, ref_work, work


def test_killed_run_resumes_to_the_same_weights(runs):
    cfg, ref_work, work = runs
    # What the kill left: epoch 1 complete and named by last_checkpoint.
    assert open(osp.join(work, 'last_checkpoint')).read().endswith(
        'epoch_1.pth')
    assert not osp.exists(osp.join(work, 'epoch_2.pth'))

    # And what a kill during a non-atomic write would have left on top: a
    # truncated newer checkpoint that last_checkpoint names, and a partial
    # temporary file of the atomic writer.
    with open(osp.join(work, 'epoch_1.pth'), 'rb') as f:
        data = f.read()
    tmp = osp.dirname(work)
    with open(osp.join(tmp, 'epoch_1_copy.pth'), 'wb') as f:
        f.write(data)
    with open(osp.join(work, 'epoch_2.pth'), 'wb') as f:
        f.write(data[:len(data) // 2])
    with open(osp.join(work, '.epoch_2.pth.12345.tmp'), 'wb') as f:
        f.write(data[:1000])
    with open(osp.join(work, 'last_checkpoint'), 'w') as f:
        f.write(osp.join(work, 'epoch_2.pth'))

    proc = start_training(cfg, work, '--resume')
    assert proc.wait(timeout=600) == 0, open(work + '.log').read()[-3000:]
    log = open(work + '.log').read()
    assert re.search(r'Resuming from \S*epoch_1\.pth, the newest intact '
                     r'checkpoint, because \S*epoch_2\.pth is truncated', log)
    assert 'resumed epoch: 1, iter: 10' in log
    assert not osp.exists(osp.join(work, '.epoch_2.pth.12345.tmp'))
    # max_keep_ckpts=1: only the last epoch is left.
    assert sorted(f for f in os.listdir(work) if f.startswith('epoch_')) \
        == ['epoch_2.pth']

    ref = weights(osp.join(ref_work, 'epoch_2.pth'))
    res = weights(osp.join(work, 'epoch_2.pth'))
    assert ref['meta']['iter'] == res['meta']['iter'] == 20
    assert ref['state_dict'].keys() == res['state_dict'].keys()
    # Bit-exact: the same floats, BN statistics included.
    for key, value in ref['state_dict'].items():
        assert torch.equal(value, res['state_dict'][key]), key
    # The optimizer continued from the same momentum buffers.
    for a, b in zip(ref['optimizer']['state'].values(),
                    res['optimizer']['state'].values()):
        assert torch.equal(a['momentum_buffer'], b['momentum_buffer'])
    # Epoch 2 did move the weights: the comparison is not vacuous.
    start = weights(osp.join(tmp, 'epoch_1_copy.pth'))['state_dict']
    assert not torch.equal(start['head.fc.weight'],
                           res['state_dict']['head.fc.weight'])


# mmengine's checkpoint writer through the atomic backend, as
# SafeCheckpointHook has the Runner use it.
WRITER = textwrap.dedent("""
    import sys
    import torch
    from mmengine.runner.checkpoint import save_checkpoint
    import teskd_mm.utils.checkpoint  # registers the backend
    state = dict(state_dict=dict(w=torch.randn(2_000_000)), meta=dict())
    i = 0
    while True:
        save_checkpoint(state, f'{sys.argv[1]}/iter_{i % 4}.pth',
                        backend_args=dict(backend='atomic_local'))
        i += 1
        print(i, flush=True)
    """)

ATOMIC = dict(backend='atomic_local')


def test_kill_during_checkpoint_writes_leaves_only_whole_files(tmp_path):
    """SIGKILL a process that does nothing but write checkpoints."""
    out = str(tmp_path)
    proc = subprocess.Popen([sys.executable, '-c', WRITER, out, ROOT],
                            env=ENV, stdout=subprocess.PIPE, text=True)
    # Let it write a few, then kill it at an arbitrary point of a write.
    for _ in range(6):
        proc.stdout.readline()
    time.sleep(0.013)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finals = [f for f in os.listdir(out) if f.endswith('.pth')]
    assert finals
    for name in finals:
        assert checkpoint_problem(osp.join(out, name)) is None, name
        torch.load(osp.join(out, name), weights_only=False)


def test_failed_write_keeps_the_old_file(tmp_path):
    path = str(tmp_path / 'epoch_1.pth')
    save_checkpoint(dict(state_dict=dict(w=torch.ones(3))), path,
                    backend_args=ATOMIC)
    before = open(path, 'rb').read()
    with pytest.raises(Exception):
        # A lambda cannot be pickled: torch.save fails half way.
        save_checkpoint(dict(bad=lambda: None), path, backend_args=ATOMIC)
    assert open(path, 'rb').read() == before
    assert os.listdir(tmp_path) == ['epoch_1.pth']


def test_checkpoint_problem_names_the_fault(tmp_path):
    good = str(tmp_path / 'good.pth')
    save_checkpoint(dict(state_dict=dict(w=torch.ones(1000))), good,
                    backend_args=ATOMIC)
    assert checkpoint_problem(good) is None
    data = open(good, 'rb').read()
    cut = tmp_path / 'cut.pth'
    cut.write_bytes(data[:len(data) - 100])
    assert 'truncated' in checkpoint_problem(str(cut))
    empty = tmp_path / 'empty.pth'
    empty.write_bytes(b'')
    assert checkpoint_problem(str(empty)) == 'is empty'
    assert checkpoint_problem(str(tmp_path / 'nope.pth')) == 'does not exist'
