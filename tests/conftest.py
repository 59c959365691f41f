"""The shared fixture layer: image folders, small configs, running tools.

Every test that needs data gets it from :func:`image_folders`: real
CIFAR-10 JPEGs when an archive of them is at hand (``CIFAR10JPG_TAR``, or
``cifar10-jpg.tar.gz`` in a ``shared/data`` folder beside the project),
else JPEG files this module writes itself, so that a fresh clone runs every
test and skips none.
"""
import itertools
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


INIT_FUNCTIONS = ('uniform_', 'normal_', 'trunc_normal_', 'constant_',
                  'ones_', 'zeros_', 'kaiming_uniform_', 'kaiming_normal_',
                  'xavier_uniform_', 'xavier_normal_')


def n_params(model) -> int:
    """Number of parameters of a module, or of the model a config builds
    (built without drawing initial values, which the count ignores)."""
    if isinstance(model, dict):
        import torch
        from mmpretrain.registry import MODELS
        with pytest.MonkeyPatch.context() as mp:
            for name in INIT_FUNCTIONS:
                mp.setattr(torch.nn.init, name, lambda t, *a, **k: t)
            model = MODELS.build(model)
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope='session', autouse=True)
def read_mmpretrain_index_once():
    """mmengine re-reads mmpretrain's 340 metafiles for every
    ``mmpretrain::`` base (0.7 s each); the files do not change, so the
    tests read each once."""
    import functools

    import mmengine.config.utils as config_utils
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(config_utils, 'load',
                   functools.lru_cache(None)(config_utils.load))
        yield


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


# -- one training step, as the Runner takes it ------------------------------
def model_cfg(cfg) -> dict:
    """The model config as the Runner builds it."""
    import copy
    model = copy.deepcopy(cfg.model)
    if 'data_preprocessor' in cfg:
        # A copy: building fills in defaults, and configs are shared.
        model.setdefault('data_preprocessor',
                         copy.deepcopy(cfg.data_preprocessor))
    return model


def small_batch(cfg, num_classes: int, batch_size: int = 2,
                size=None) -> dict:
    """The package's dummy batch at the config's input size, shrunk to 64 px
    for ImageNet-size configs (still halving through five stride-2
    stages), to keep the tests fast; or at ``size``."""
    from teskd_mm.utils.inputs import dummy_batch, input_size
    if size is None:
        size = input_size(cfg, 'train')
        if max(size) > 64:
            size = (64, 64)
    return dummy_batch(cfg, 'train', batch_size, size=size,
                       num_classes=num_classes)


def expected_loss_keys(head: dict) -> set:
    """The loss entries a MultiBranchClsHead config gives."""
    loss = head.get('loss', {})
    keys = {'loss_ce_teacher'}
    for b in head.get('students', (1, 2, 3)):
        keys.add(f'loss_ce_student{b}')
        if loss.get('kd_weight', 0.8):
            keys.add(f'loss_kd_student{b}')
        if loss.get('fea_weight', 1e-7):
            keys.add(f'loss_fea_student{b}')
    return keys


_hubs = itertools.count()


def train_one_step(cfg, steps: int = 1, size=None) -> tuple:
    """Build the model and take ``steps`` SGD steps on random images, as the
    Runner would (epoch 0 in the message hub), at :func:`small_batch`'s
    size or ``size``.

    Returns:
        tuple: The model, the last losses, and whether the first backbone
        parameter and the classifier changed.
    """
    import torch
    from mmengine.logging import MessageHub
    from mmengine.optim import build_optim_wrapper
    from mmpretrain.registry import MODELS
    # A fresh hub of its own, which becomes the current one.
    hub = MessageHub.get_instance(f'train_one_step_{next(_hubs)}')
    hub.update_info('epoch', 0)
    hub.update_info('iter', 0)
    hub.update_info('max_epochs', cfg.train_cfg.get('max_epochs', 1))
    torch.manual_seed(0)
    model = MODELS.build(model_cfg(cfg))
    model.init_weights()
    model.train()
    optim = cfg.optim_wrapper
    if optim.get('type') == 'AmpOptimWrapper' and \
            not torch.cuda.is_available():
        # mmengine's AMP runs on CUDA only; the step is taken in fp32.
        optim = dict(optimizer=optim.optimizer)
    optim_wrapper = build_optim_wrapper(model, optim)
    watched = [next(model.backbone.parameters()), model.head.fc.weight]
    before = [p.detach().clone() for p in watched]
    batch = small_batch(cfg, model.head.num_classes, size=size)
    for _ in range(steps):
        losses = model.train_step(batch, optim_wrapper)
    changed = [not torch.equal(a, p) for a, p in zip(before, watched)]
    return model, losses, changed


# -- launching ----------------------------------------------------------------
def free_port() -> str:
    """A TCP port free on this machine now, for a launcher's master."""
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return str(s.getsockname()[1])


# -- running the tools --------------------------------------------------------
def run_tool(*args, env=None, timeout=900, check=True):
    """Run ``python <args>`` from the project root and return it."""
    # A launcher's variables left in this process by a test must not make
    # the tool a rank of some distributed run.
    full_env = {
        k: v
        for k, v in os.environ.items()
        if k not in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR',
                     'MASTER_PORT') and not k.startswith('SLURM_')
    }
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


def train_in_process(config: str, work_dir: str, **options) -> None:
    """Train a config with ``teskd_mm.apis.train``, as ``tools/train.py``
    would without options; ``options`` are merged as ``--cfg-options``.
    For tests that need a trained run, not the command line."""
    import torch
    from mmengine.config import Config
    from teskd_mm.apis import train
    cfg = Config.fromfile(config)
    cfg.merge_from_dict(options)
    cfg.work_dir = work_dir
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(cfg)
    finally:
        torch.set_num_threads(threads)


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
