"""The shared fixture layer: image folders, small configs, running tools.

Every test that needs data gets it from :func:`image_folders`: real
CIFAR-10 JPEGs when an archive of them is at hand (``CIFAR10JPG_TAR``, or
``cifar10-jpg.tar.gz`` in a ``shared/data`` folder beside the project),
else JPEG files this module writes itself, so that a fresh clone runs every
test and skips none.
"""
import os
import os.path as osp
import runpy
import shutil
import subprocess
import sys
import tarfile
import textwrap
from typing import Dict, Sequence

import numpy as np
import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CIFAR10_TAR = os.environ.get(
    'CIFAR10JPG_TAR',
    osp.abspath(osp.join(ROOT, '..', 'shared', 'data',
                         'cifar10-jpg.tar.gz')))
CIFAR10_CLASSES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog',
                   'frog', 'horse', 'ship', 'truck')


def n_params(module) -> int:
    """Number of parameters of a module."""
    return sum(p.numel() for p in module.parameters())


def write_jpegs(dst: str,
                per_class: Dict[str, int],
                classes: Sequence[str] = CIFAR10_CLASSES,
                size: int = 32,
                seed: int = 0) -> str:
    """Write ``<dst>/<split>/<class>/<NNNN>.jpg`` image folders.

    Each class has its own colour and stripe direction under noise, so a
    small network can learn them; the files are real JPEGs, decoded by the
    same loader as any data set's.

    Args:
        dst (str): The folder to fill.
        per_class (dict): Images per class for each split, e.g.
            ``{'train': 8, 'test': 4}``.
        classes (Sequence[str]): The class folder names.
        size (int): Width and height of the images.
        seed (int): Seed of the noise.
    """
    from PIL import Image
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    for c, name in enumerate(classes):
        colour = np.array([(c * 97) % 256, (c * 53 + 80) % 256,
                           (c * 29 + 160) % 256], dtype=np.float32)
        stripes = np.sin((xx * np.cos(c) + yy * np.sin(c)) * 0.6)[..., None]
        for split, count in per_class.items():
            folder = osp.join(dst, split, name)
            os.makedirs(folder, exist_ok=True)
            for i in range(count):
                noise = rng.normal(0, 30, (size, size, 3))
                img = np.clip(colour + 60 * stripes + noise, 0, 255)
                Image.fromarray(img.astype(np.uint8)).save(
                    osp.join(folder, f'{i:04d}.jpg'), quality=90)
    return dst


def image_folders(dst: str, per_class: Dict[str, int]) -> str:
    """``per_class[split]`` JPEGs of each of 10 classes, CIFAR-10's if the
    archive is at hand, else written by :func:`write_jpegs`."""
    if not osp.isfile(CIFAR10_TAR):
        return write_jpegs(dst, per_class)
    with tarfile.open(CIFAR10_TAR) as tar:
        for member in tar:
            parts = member.name.split('/')
            # cifar10-jpg/<split>/<class>/<NNNN>.jpg
            if len(parts) != 4 or not member.isfile():
                continue
            _, split, cls, fname = parts
            if split in per_class and \
                    int(osp.splitext(fname)[0]) < per_class[split]:
                out = osp.join(dst, split, cls, fname)
                os.makedirs(osp.dirname(out), exist_ok=True)
                with tar.extractfile(member) as src, open(out, 'wb') as f:
                    shutil.copyfileobj(src, f)
    return dst


@pytest.fixture(scope='session')
def cifar10_mini(tmp_path_factory) -> str:
    """80 training and 40 test images in 10 class folders."""
    return image_folders(
        str(tmp_path_factory.mktemp('cifar10_mini')), {
            'train': 8,
            'test': 4
        })


# -- configs ----------------------------------------------------------------
# The shipped CIFAR-10 JPEG recipe with every width divided by eight (stages
# of 8, 16, 32 and 64 channels), about 0.1 s per training step of 4 images.
TINY = """
_base_ = ['{root}/configs/teskd/resnet18_cifar10jpg.py']
model = dict(
    backbone=dict(stem_channels=8, base_channels=8),
    neck=dict(in_channels=(8, 16, 32, 64)),
    head=dict(in_channels=64))
train_dataloader = dict(
    batch_size=4, num_workers=0, dataset=dict(data_root='{data_root}'))
val_dataloader = dict(
    batch_size=4, num_workers=0, dataset=dict(data_root='{data_root}'))
test_dataloader = val_dataloader
train_cfg = dict(max_epochs=3)
optim_wrapper = dict(optimizer=dict(lr=0.05))
default_hooks = dict(logger=dict(interval=1))
randomness = dict(seed=0)
"""
# The shipped recipes at full width on the same data, for the end-to-end
# tests of the tools: a few steps of 8 images.
FULL = """
_base_ = ['{root}/configs/{config}']
train_dataloader = dict(
    batch_size=8, num_workers=0, dataset=dict(data_root='{data_root}'))
val_dataloader = dict(
    batch_size=8, num_workers=0, dataset=dict(data_root='{data_root}'))
test_dataloader = val_dataloader
train_cfg = dict(max_epochs=1)
optim_wrapper = dict(optimizer=dict(lr=0.01))
default_hooks = dict(logger=dict(interval=1))
randomness = dict(seed=0)
"""

_FLAT = {}


def _write(path: str, text: str, extra: str) -> str:
    """Write ``text`` flattened, with ``extra`` in a child config.

    Resolving the ``mmpretrain::`` bases costs seconds per load, so the
    config is written flattened once per text; a child (``_base_`` = the
    flat config) merges ``extra`` into it, where lines appended to the same
    file would replace its dicts.
    """
    from mmengine.config import Config
    base = path[:-3] + '_flat.py' if extra else path
    if text not in _FLAT:
        src = path[:-3] + '_src.py'
        with open(src, 'w') as f:
            f.write(text)
        _FLAT[text] = Config.fromfile(src).pretty_text
    with open(base, 'w') as f:
        f.write(_FLAT[text])
    if extra:
        with open(path, 'w') as f:
            f.write(f"_base_ = ['{osp.abspath(base)}']\n")
            f.write(textwrap.dedent(extra))
    return path


def write_tiny_config(path: str, data_root: str, extra: str = '') -> str:
    """The tiny TESKD config on ``data_root``; ``extra`` lines merged in."""
    return _write(path, TINY.format(root=ROOT, data_root=data_root), extra)


def write_full_config(path: str,
                      data_root: str,
                      config: str = 'teskd/resnet18_cifar10jpg.py',
                      extra: str = '') -> str:
    """A shipped config (relative to configs/) on ``data_root``."""
    return _write(
        path, FULL.format(root=ROOT, config=config, data_root=data_root),
        extra)


# -- running the tools --------------------------------------------------------
def run_tool(*args, env=None, timeout=900, check=True):
    """Run ``python <args>`` from the project root and return it."""
    full_env = dict(os.environ)
    full_env.setdefault('OMP_NUM_THREADS', '2')
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, *args],
                          cwd=ROOT,
                          env=full_env,
                          capture_output=True,
                          text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f'{args} exited {proc.returncode}\n--- stdout ---\n'
            f'{proc.stdout[-5000:]}\n--- stderr ---\n{proc.stderr[-5000:]}')
    return proc


def tool_in_process(tool: str, *args: str) -> None:
    """Run ``tools/<tool>`` in this process, on one thread.

    The tool's own ``main``, as a fresh process would run it, where the
    imports are paid already; the environment and thread count are put
    back afterwards.
    """
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
