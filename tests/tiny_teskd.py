"""A TESKD config small enough for process-level tests on a CPU.

The shipped ResNet-18 recipe with every width divided by eight (stages of
8, 16, 32 and 64 channels): the same components, hooks, data path and
tools, about 0.1 s per training step of 4 images.
"""
import os.path as osp
import textwrap

from mmengine.config import Config

from conftest import ROOT

TINY = """
_base_ = ['{root}/configs/teskd/resnet18_cifar100.py']
model = dict(
    backbone=dict(stem_channels=8, base_channels=8),
    neck=dict(in_channels=(8, 16, 32, 64)),
    head=dict(in_channels=64, num_classes=10))
data_preprocessor = dict(num_classes=10)
_load = dict(type='LoadImageFromFile')
train_dataloader = dict(
    batch_size=4, num_workers=0,
    dataset=dict(
        _delete_=True, type='CustomDataset', data_root='{data_root}',
        data_prefix='train',
        pipeline=[_load,
                  dict(type='RandomCrop', crop_size=32, padding=4),
                  dict(type='RandomFlip', prob=0.5, direction='horizontal'),
                  dict(type='PackInputs')]))
val_dataloader = dict(
    batch_size=4, num_workers=0,
    dataset=dict(
        _delete_=True, type='CustomDataset', data_root='{data_root}',
        data_prefix='test', pipeline=[_load, dict(type='PackInputs')]))
test_dataloader = val_dataloader
train_cfg = dict(max_epochs=3)
optim_wrapper = dict(optimizer=dict(lr=0.05))
default_hooks = dict(logger=dict(interval=1))
randomness = dict(seed=0)
"""


_FLAT = {}


def write_tiny_config(path: str, data_root: str, extra: str = '') -> str:
    """Write the tiny config; ``extra`` lines go into a child config.

    The config is written flattened (its ``mmpretrain::`` bases merged in),
    because resolving those bases costs seconds per load. A child
    (``_base_`` = the tiny config) merges ``extra`` with it, where lines
    appended to the same file would replace its dicts.
    """
    base = path[:-3] + '_tiny.py' if extra else path
    if data_root not in _FLAT:
        src = path[:-3] + '_src.py'
        with open(src, 'w') as f:
            f.write(TINY.format(root=ROOT, data_root=data_root))
        _FLAT[data_root] = Config.fromfile(src).pretty_text
    with open(base, 'w') as f:
        f.write(_FLAT[data_root])
    if extra:
        with open(path, 'w') as f:
            f.write(f"_base_ = ['{osp.abspath(base)}']\n")
            f.write(textwrap.dedent(extra))
    return path


def tool_in_process(tool: str, *args: str) -> None:
    """Run ``tools/<tool>`` in this process, on one thread.

    The tool's own ``main``, as a fresh process would run it, where the
    imports are paid already; the environment and thread count are put
    back afterwards.
    """
    import os
    import runpy
    import sys

    import torch
    argv, env, threads = sys.argv, dict(os.environ), torch.get_num_threads()
    sys.argv = [f'tools/{tool}', *args]
    torch.set_num_threads(1)
    try:
        runpy.run_path(osp.join(ROOT, 'tools', tool), run_name='__main__')
    finally:
        sys.argv = argv
        os.environ.clear()
        os.environ.update(env)
        torch.set_num_threads(threads)
