"""tools/dist_train.sh and tools/dist_test.sh: two processes on the CPU.

The same path as multi-GPU training (torchrun, DistributedDataParallel,
the distributed sampler, metrics gathered across processes, checkpoints
written by rank 0), over gloo.

What is comparable with one process: with batch-statistics BN, each of the
two processes normalises its own half batch, so DDP is not the same
computation as one process on the whole batch (unless SyncBN, which torch
supports only on GPUs). The comparison therefore uses GroupNorm, which
normalises each image on its own, and no random augmentation (the
processes draw from the same seed). Then 2 processes x 2 images compute
the same update as 1 process x 4 images, up to the order of float sums.
Five SGD steps at lr 0.01 keep that rounding from being amplified: the
weights agree to 2e-9 relative (L2) and 6e-8 at most, where a real fault,
e.g. the summed feature loss not scaled by the number of processes, is off
by 1.5e-7 and 7e-6; the test allows 2e-8 and 1e-6.
"""
import json
import os
import os.path as osp
import re
import subprocess
import sys
import time

import pytest
import torch

from conftest import ROOT, free_port, tool_in_process, write_tiny_config

GROUP_NORM = """
norm = dict(type='GN', num_groups=4)
model = dict(
    backbone=dict(norm_cfg=norm), neck=dict(norm_cfg=norm),
    head=dict(norm_cfg=norm))
train_dataloader = dict(
    batch_size=2,
    dataset=dict(indices=20,
                 pipeline=[dict(type='LoadImageFromFile'),
                           dict(type='PackInputs')]))
optim_wrapper = dict(optimizer=dict(lr=0.01))
val_dataloader = dict(batch_size=10)
test_dataloader = dict(batch_size=10)
train_cfg = dict(max_epochs=1)
"""


def start_dist_tool(script, *args):
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHON=sys.executable,
               PORT=free_port())
    return subprocess.Popen(['bash', f'tools/{script}', *args], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish(proc):
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, log[-5000:]
    return log


def dist_tool(script, *args):
    return finish(start_dist_tool(script, *args))


def state(path):
    return torch.load(path, map_location='cpu',
                      weights_only=False)['state_dict']


@pytest.fixture(scope='module')
def trained(tmp_path_factory, cifar10_mini):
    tmp = tmp_path_factory.mktemp('dist')
    cfg = write_tiny_config(str(tmp / 'gn.py'), cifar10_mini, GROUP_NORM)
    ddp_work, one_work = str(tmp / 'ddp'), str(tmp / 'one')
    ddp = start_dist_tool('dist_train.sh', cfg, '2', '--work-dir', ddp_work)
    # Meanwhile, the same global batch of 4 in one process.
    tool_in_process('train.py', cfg, '--work-dir', one_work, '--cfg-options',
                    'train_dataloader.batch_size=4')
    return cfg, tmp, finish(ddp), ddp_work, one_work


def val_metrics(work):
    scalars = [
        osp.join(r, f) for r, _, fs in os.walk(work) for f in fs
        if f == 'scalars.json'
    ]
    records = [json.loads(line) for line in open(scalars[0])]
    return {
        k: v
        for r in records if 'accuracy/top1' in r for k, v in r.items()
        if k.startswith('accuracy/')
    }


def test_two_processes_train_validate_and_checkpoint(trained):
    _, _, log, ddp_work, _ = trained
    assert 'Distributed training: True' in log
    assert 'GPU number: 2' in log
    # 20 images, 10 per process, 2 per step: 5 steps, each of 4 images.
    assert re.search(r'Epoch\(train\) \[1\]\[5/5\]', log)
    assert 'accuracy/student3_top1' in log
    # One checkpoint, written once, complete.
    files = sorted(os.listdir(ddp_work))
    assert [f for f in files if f.endswith('.pth')] == \
        ['best_accuracy_top1_epoch_1.pth', 'epoch_1.pth']
    assert not [f for f in files if f.endswith('.tmp')]
    assert state(osp.join(ddp_work, 'epoch_1.pth'))['head.fc.weight'].shape \
        == (10, 64)


def test_two_processes_match_one_on_the_same_global_batch(trained):
    _, _, _, ddp_work, one_work = trained
    ddp = state(osp.join(ddp_work, 'epoch_1.pth'))
    one = state(osp.join(one_work, 'epoch_1.pth'))
    assert ddp.keys() == one.keys()
    diff = sum((ddp[k].double() - one[k].double()).pow(2).sum() for k in one)
    norm = sum(one[k].double().pow(2).sum() for k in one)
    worst = max((ddp[k].double() - one[k].double()).abs().max() for k in one)
    # Float-sum order only (see the top of this file).
    assert (diff / norm).sqrt() < 2e-8
    assert worst < 1e-6
    # Validation gathered all 40 test images on both: the same scores.
    assert val_metrics(ddp_work) == val_metrics(one_work)


def test_dist_test_gathers_the_same_metrics(trained):
    cfg, tmp, _, ddp_work, _ = trained
    ckpt = osp.join(ddp_work, 'epoch_1.pth')
    out2, out1 = str(tmp / 'test2.json'), str(tmp / 'test1.json')
    dist_tool('dist_test.sh', cfg, ckpt, '2', '--work-dir',
              str(tmp / 'test2'), '--out', out2)
    tool_in_process('test.py', cfg, ckpt, '--work-dir', str(tmp / 'test1'),
                    '--out', out1)
    two, one = json.load(open(out2)), json.load(open(out1))
    assert 'accuracy/ensemble_top1' in two
    assert two == one


def test_parameters_without_gradient_train_under_ddp(tmp_path,
                                                     cifar10_mini):
    """No CE and a detached KD target: the teacher's fc gets no gradient.

    None of the shipped configs leaves a parameter without gradient; the
    pre-flight check finds such parameters with one backward pass and
    switches on find_unused_parameters, without which DDP stops at the
    second step ("Expected to have finished reduction in the prior
    iteration").
    """
    cfg = write_tiny_config(
        str(tmp_path / 'no_ce.py'), cifar10_mini, """
        model = dict(head=dict(loss=dict(ce_weight=0, teacher_detach=True)))
        train_dataloader = dict(batch_size=2, dataset=dict(indices=12))
        train_cfg = dict(max_epochs=1)
        """)
    work = str(tmp_path / 'work')
    log = dist_tool('dist_train.sh', cfg, '2', '--work-dir', work,
                    '--no-validate')
    assert "get no gradient from the loss (e.g. ['head.fc.weight'," in log
    assert 'find_unused_parameters=True' in log
    assert re.search(r'Epoch\(train\) \[1\]\[3/3\]', log)
    assert osp.isfile(osp.join(work, 'epoch_1.pth'))


def until(condition, timeout: float = 20.0) -> bool:
    """Whether ``condition()`` holds within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def gloo_threads():
    """Names of this process's gloo threads (from /proc)."""
    names = [open(f'/proc/self/task/{t}/comm').read().strip()
             for t in os.listdir('/proc/self/task')]
    return sorted(n for n in names if 'gloo' in n)


@pytest.mark.skipif(not osp.isdir('/proc/self/task'),
                    reason='thread names are read from /proc')
def test_closing_ends_the_groups_threads_before_exit(monkeypatch):
    """close_distributed ends the group's communication threads while the
    interpreter is whole, even when a reference cycle still holds the group
    (left to the interpreter's teardown, a process can abort there)."""
    import torch.distributed as dist

    from teskd_mm.utils import close_distributed
    monkeypatch.setenv('MASTER_ADDR', '127.0.0.1')
    monkeypatch.setenv('MASTER_PORT', free_port())
    others = gloo_threads()
    dist.init_process_group('gloo', rank=0, world_size=1)
    try:
        # The group held in a reference cycle, as a Runner's DDP model
        # holds it.
        holder = [dist.distributed_c10d._get_default_group()]
        holder.append(holder)
        del holder
        # gloo starts its threads on their own schedule; under load they
        # appear later: a collective, then wait for them.
        dist.barrier()
        assert until(lambda: len(gloo_threads()) > len(others))
        close_distributed()
        assert not dist.is_initialized()
        # Left in the cycle, the threads would live on: the wait fails.
        assert until(lambda: gloo_threads() == others), gloo_threads()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
