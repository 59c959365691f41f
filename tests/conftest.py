"""Shared fixtures: small real data sets and a way to run the tools."""
import os
import os.path as osp
import shutil
import subprocess
import sys
import tarfile

import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
SHARED_DATA = osp.abspath(osp.join(ROOT, '..', 'shared', 'data'))
CIFAR10_TAR = osp.join(SHARED_DATA, 'cifar10-jpg.tar.gz')


def make_cifar10_subset(dst: str, per_class: dict) -> str:
    """Extract ``per_class[split]`` images of each class of cifar10-jpg.

    Args:
        dst (str): The folder to create ``train/<class>/`` and
            ``test/<class>/`` in.
        per_class (dict): Images per class for each split, e.g.
            ``{'train': 8, 'test': 4}``.

    Returns:
        str: ``dst``, laid out as mmpretrain's ``CustomDataset`` reads it.
    """
    if not osp.isfile(CIFAR10_TAR):
        pytest.skip(f'{CIFAR10_TAR} is not available')
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
    """80 training and 40 test images of real CIFAR-10 (JPEG), 10 classes."""
    return make_cifar10_subset(
        str(tmp_path_factory.mktemp('cifar10_mini')), {
            'train': 8,
            'test': 4
        })


def run_tool(*args, env=None, timeout=900, check=True):
    """Run ``python tools/<args>`` from the project root and return it."""
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
