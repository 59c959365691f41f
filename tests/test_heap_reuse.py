"""HeapReuseHook: freed CPU memory is reused, as declared by a config."""
import json
import os.path as osp
import sys

import pytest
from mmengine.config import Config

from conftest import ROOT, run_tool, write_tiny_config

SPEED = osp.join(ROOT, 'configs', 'speed', 'resnet18_cifar100_heap-reuse.py')

# Page faults of three 134 MB tensors (512-channel 32x32 maps at batch 64)
# allocated, filled and freed, step after step as in training; the faults
# of the last step. glibc needs a few steps to settle: a freed block of
# exactly a tensor's size cannot take the next 64-byte aligned request of
# that size, so the first repeats still grow the heap.
FAULTS = """
import resource, sys, torch
if sys.argv[1] == 'reuse':
    from teskd_mm.hooks import reuse_freed_memory
    assert reuse_freed_memory(1024, 1024) is None
torch.set_num_threads(1)
for step in range(6):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    maps = [torch.empty(64 * 512 * 32 * 32).fill_(step) for _ in range(3)]
    kept = torch.empty(1000)  # a small block left behind each step
    del maps
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str) -> int:
    proc = run_tool('-c', FAULTS, mode, env=dict(PYTHONPATH=ROOT))
    return int(proc.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith('linux'),
                    reason='glibc malloc and minor page faults of Linux')
def test_freed_memory_is_reused_instead_of_faulted_in_again():
    plain, reused = faults('plain'), faults('reuse')
    # 4 KiB pages: about 98,000 faults for three fresh mappings.
    assert plain > 60_000
    assert reused < plain / 20


@pytest.mark.parametrize('value', [0, 4096, 1.5])
def test_thresholds_mallopt_cannot_take_are_refused(value):
    import teskd_mm  # noqa: F401
    from mmpretrain.registry import HOOKS
    with pytest.raises(ValueError, match=f'mmap_threshold_mb={value!r} must '
                       'be a whole number of MiB from 1 to 2047'):
        HOOKS.build(dict(type='HeapReuseHook', mmap_threshold_mb=value))


def test_speed_config_is_the_recipe_plus_the_hook():
    speed = Config.fromfile(SPEED)
    base = Config.fromfile(
        osp.join(ROOT, 'configs', 'teskd', 'resnet18_cifar100.py'))
    assert speed.custom_hooks == base.custom_hooks + [
        dict(type='HeapReuseHook', mmap_threshold_mb=1024,
             trim_threshold_mb=1024)]
    for key in set(base) | set(speed):
        if key != 'custom_hooks':
            assert speed.get(key) == base.get(key), key


def test_a_training_run_applies_the_declared_hook(tmp_path, cifar10_mini):
    cfg = write_tiny_config(
        str(tmp_path / 'tiny.py'), cifar10_mini, """
        custom_hooks = [dict(type='EpochSeedHook'),
                        dict(type='NonFiniteLossHook'),
                        dict(type='SyncBuffersHook'),
                        dict(type='HeapReuseHook', mmap_threshold_mb=64)]
        train_cfg = dict(max_epochs=1)
        """)
    proc = run_tool('tools/train.py', cfg, '--work-dir',
                    str(tmp_path / 'work'), '--no-validate')
    log = proc.stdout + proc.stderr
    assert 'HeapReuseHook' in log  # listed among the Runner's hooks
    assert 'does nothing' not in log
    assert osp.isfile(tmp_path / 'work' / 'epoch_1.pth')


def test_benchmark_applies_it_as_declared(tmp_path):
    out = tmp_path / 'bench.json'
    run_tool('tools/benchmark.py', SPEED, '--baseline',
             osp.join(ROOT, 'configs', 'baseline', 'resnet18_cifar100.py'),
             '--batch-size', '2', '--iters', '1', '--warmup', '0', '--out',
             str(out), env=dict(OMP_NUM_THREADS='1'))
    settings = json.loads(out.read_text())['settings']
    assert settings['heap_reuse'] == dict(mmap_threshold_mb=1024,
                                          trim_threshold_mb=1024)


def test_without_glibc_the_declared_hook_says_it_does_nothing(monkeypatch):
    """A C library without mallopt (musl, macOS): benchmark and profile
    warn that the declared hook is not in force, instead of timing as if."""
    import ctypes.util

    import teskd_mm  # noqa: F401
    from teskd_mm.hooks.heap_reuse_hook import reuse_as_declared
    monkeypatch.setattr(ctypes.util, 'find_library',
                        lambda name: 'libc-without-mallopt.so')
    with pytest.warns(UserWarning, match=r'HeapReuseHook does nothing: the '
                      r'C library \(libc-without-mallopt.so\) has no '
                      'mallopt; only glibc does'):
        assert reuse_as_declared(Config.fromfile(SPEED)) is None
    assert reuse_as_declared(Config.fromfile(
        osp.join(ROOT, 'configs', 'teskd', 'resnet18_cifar100.py'))) is None
