"""The image-folder configs (CIFAR-10 JPEG, Imagenette) and their runner."""
import functools
import json
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT
from mmengine.config import Config
from PIL import Image

import teskd_mm  # noqa: F401  (registers the components)

CONFIGS = {
    ('teskd', 'cifar10jpg'): 'configs/teskd/resnet18_cifar10jpg.py',
    ('baseline', 'cifar10jpg'): 'configs/baseline/resnet18_cifar10jpg.py',
    ('teskd', 'imagenette'): 'configs/teskd/resnet18_imagenette.py',
    ('baseline', 'imagenette'): 'configs/baseline/resnet18_imagenette.py',
}
ENV_NAMES = {'cifar10jpg': 'CIFAR10JPG_ROOT', 'imagenette': 'IMAGENETTE_ROOT'}
DEFAULT_ROOTS = {
    'cifar10jpg': 'data/cifar10-jpg',
    'imagenette': 'data/imagenette2-224'
}
RUNNER = osp.join(ROOT, 'tools', 'run_real_image_experiment.sh')


@functools.lru_cache(maxsize=None)
def _load(method, recipe, data_root):
    env = ENV_NAMES[recipe]
    old = os.environ.pop(env, None)
    try:
        if data_root is not None:
            os.environ[env] = data_root
        return Config.fromfile(osp.join(ROOT, CONFIGS[(method, recipe)]))
    finally:
        os.environ.pop(env, None)
        if old is not None:
            os.environ[env] = old


def load(method, recipe, data_root=None):
    """Load a config (once: loading costs seconds), with its data root set
    through the environment when ``data_root`` is given."""
    return _load(method, recipe, data_root).copy()


def loaders(cfg):
    return [cfg[k] for k in ('train_dataloader', 'val_dataloader',
                             'test_dataloader')]


@pytest.mark.parametrize('method,recipe', sorted(CONFIGS))
def test_data_root_defaults(method, recipe):
    cfg = load(method, recipe)
    for loader in loaders(cfg):
        assert loader.dataset.type == 'CustomDataset'
        assert loader.dataset.data_root == DEFAULT_ROOTS[recipe]
        assert loader.dataset.pipeline[0]['type'] == 'LoadImageFromFile'
    test_split = 'test' if recipe == 'cifar10jpg' else 'val'
    assert [ld.dataset.data_prefix for ld in loaders(cfg)] == \
        ['train', test_split, test_split]
    assert cfg.model.head.num_classes == 10
    assert cfg.data_preprocessor.num_classes == 10


@pytest.mark.parametrize('recipe', ['cifar10jpg', 'imagenette'])
def test_data_root_is_one_override(recipe):
    # The baseline reads its data settings from the TESKD config, so this
    # also shows that the variable reaches through the inheritance.
    cfg = load('baseline', recipe, data_root='/my/own/folders')
    assert {ld.dataset.data_root for ld in loaders(cfg)} == \
        {'/my/own/folders'}


@pytest.mark.parametrize('recipe', ['cifar10jpg', 'imagenette'])
def test_baseline_differs_only_in_model_and_metric(recipe):
    teskd, base = load('teskd', recipe), load('baseline', recipe)
    for key in ('train_dataloader', 'val_dataloader', 'data_preprocessor',
                'optim_wrapper', 'param_scheduler', 'train_cfg',
                'default_hooks', 'randomness'):
        assert teskd[key] == base[key], key
    assert teskd.model.neck.type == 'MFMNeck'
    assert base.model.neck.type == 'GlobalAveragePooling'
    assert teskd.val_evaluator.type == 'MultiBranchAccuracy'
    assert base.val_evaluator.type == 'Accuracy'


def test_recipes():
    cifar = load('teskd', 'cifar10jpg')
    # The CIFAR-100 recipe with this data set's own statistics (RGB).
    assert cifar.model.head.loss.ce_weight == 0.2
    assert cifar.model.head.loss.kd_weight == 0.8
    assert cifar.data_preprocessor.to_rgb is True
    np.testing.assert_allclose(
        np.array(cifar.data_preprocessor.mean) / 255,
        [0.4913, 0.4821, 0.4465], atol=6e-5)
    np.testing.assert_allclose(
        np.array(cifar.data_preprocessor.std) / 255,
        [0.2452, 0.2428, 0.2606], atol=6e-5)
    assert [t['type'] for t in cifar.train_dataloader.dataset.pipeline] == [
        'LoadImageFromFile', 'RandomCrop', 'RandomFlip', 'PackInputs'
    ]
    assert cifar.train_cfg.max_epochs == 200
    assert cifar.param_scheduler.milestones == [100, 150]

    inet = load('teskd', 'imagenette')
    # The paper's ImageNet setting: alpha1 = 0.8, 90 epochs, x0.1 at 30/60.
    assert inet.model.backbone.type == 'ResNet'
    assert inet.model.head.loss.ce_weight == 0.8
    assert inet.model.head.loss.kd_weight == 0.2
    assert inet.train_cfg.max_epochs == 90
    assert inet.param_scheduler.milestones == [30, 60]
    assert inet.train_dataloader.batch_size == 256
    assert inet.optim_wrapper.optimizer.lr == 0.1
    assert inet.optim_wrapper.optimizer.weight_decay == 1e-4


@pytest.mark.parametrize(
    'method,recipe,params',
    [
        # 100-class figures less 90 classes x 513 per classifier.
        ('baseline', 'cifar10jpg', 11_220_132 - 90 * 513),
        ('teskd', 'cifar10jpg', 37_050_832 - 4 * 90 * 513),
        # torchvision's ResNet-18 (11,689,512) with 10 classes.
        ('baseline', 'imagenette', 11_689_512 - 990 * 513),
    ])
def test_model_sizes(method, recipe, params):
    from mmpretrain.registry import MODELS
    model = MODELS.build(load(method, recipe).model)
    assert sum(p.numel() for p in model.parameters()) == params


def write_image(path, size, mode='RGB'):
    os.makedirs(osp.dirname(path), exist_ok=True)
    rng = np.random.default_rng(len(path))
    channels = 3 if mode == 'RGB' else 1
    pixels = rng.integers(0, 256, (size[1], size[0], channels), np.uint8)
    Image.fromarray(pixels.squeeze()).save(path, quality=90)


def test_imagenette_pipelines_and_branches(tmp_path):
    from mmengine.dataset import pseudo_collate
    from mmpretrain.registry import DATASETS, MODELS

    root = str(tmp_path / 'folders')
    # Class folders as in Imagenette, a greyscale image among them.
    for split in ('train', 'val'):
        write_image(f'{root}/{split}/n01440764/a.JPEG', (300, 260))
        write_image(f'{root}/{split}/n02102040/b.JPEG', (240, 320), mode='L')
    cfg = load('teskd', 'imagenette', data_root=root)
    train = DATASETS.build(cfg.train_dataloader.dataset)
    val = DATASETS.build(cfg.val_dataloader.dataset)
    assert len(train) == len(val) == 2
    assert train.CLASSES == ('n01440764', 'n02102040')
    items = [train[0], train[1], val[0], val[1]]
    for item in items:
        assert item['inputs'].shape == (3, 224, 224)

    model = MODELS.build(cfg.model)
    data = model.data_preprocessor(pseudo_collate(items[:2]), training=True)
    losses = model(**data, mode='loss')
    for b in (1, 2, 3):
        assert torch.isfinite(losses[f'loss_kd_student{b}'])
    model.eval()
    with torch.no_grad():
        preds = model(data['inputs'], data['data_samples'], mode='predict')
    assert preds[0].pred_score.shape == (10, )
    assert len(preds[0].student_scores) == 3


def run_runner(*args, env=None):
    full_env = dict(os.environ, OMP_NUM_THREADS='1')
    full_env.update(env or {})
    return subprocess.run(['bash', RUNNER, *args], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=600)


def test_runner_rejects_bad_inputs(tmp_path):
    proc = run_runner('cifar100', str(tmp_path / 'out'))
    assert proc.returncode == 2
    assert "unknown recipe 'cifar100': use cifar10jpg or imagenette" in \
        proc.stderr
    proc = run_runner('imagenette', str(tmp_path / 'out'),
                      env={'DATA_ROOT': str(tmp_path / 'missing')})
    assert proc.returncode == 2
    assert f'no folder {tmp_path}/missing/train' in proc.stderr
    assert 'val/<class>/' in proc.stderr
    proc = run_runner('cifar10jpg', str(tmp_path / 'out'),
                      env={'N_TRAIN': '3O'})
    assert proc.returncode == 2
    assert "N_TRAIN='3O' is not a whole number (e.g. N_TRAIN=10)" in \
        proc.stderr
    proc = run_runner('cifar10jpg', str(tmp_path / 'out'),
                      env={'EPOCHS': '0'})
    assert 'EPOCHS=0 must be at least 1' in proc.stderr
    assert not (tmp_path / 'out').exists()


def test_runner_trains_both_and_plots(cifar10_mini, tmp_path):
    """Two steps of each method on real CIFAR-10 JPEGs, then the curves."""
    python = sys.executable
    out = str(tmp_path / 'exp')
    env = dict(DATA_ROOT=cifar10_mini, N_TRAIN='1', N_TEST='1', EPOCHS='1',
               MILESTONES='[1]', BATCH='5', SEED='3', PYTHON=python,
               EXTRA='train_dataloader.num_workers=0 '
               'val_dataloader.num_workers=0')
    proc = run_runner('cifar10jpg', out, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    # One image of each class was copied; the source folders are untouched.
    assert len(os.listdir(osp.join(out, 'data', 'train'))) == 10
    assert len(os.listdir(osp.join(cifar10_mini, 'train', 'cat'))) == 8
    for name in ('teskd_resnet18_cifar10jpg', 'baseline_resnet18_cifar10jpg'):
        work_dir = osp.join(out, name)
        assert osp.isfile(osp.join(work_dir, 'epoch_1.pth'))
        dumped = Config.fromfile(
            osp.join(work_dir, osp.basename(CONFIGS[(name.split('_')[0],
                                                     'cifar10jpg')])))
        assert dumped.randomness.seed == 3
        assert dumped.train_dataloader.batch_size == 5
        assert dumped.train_dataloader.dataset.data_root == \
            osp.join(out, 'data')
        assert dumped.auto_scale_lr.enable is True
        scalars = [
            json.loads(line) for line in open(
                osp.join(work_dir,
                         sorted(d for d in os.listdir(work_dir)
                                if d[:2] == '20')[-1], 'vis_data',
                         'scalars.json'))
        ]
        train = [s for s in scalars if 'iter' in s]
        assert train[-1]['iter'] == 2  # 10 images, batch 5
        # --auto-scale-lr: the config's 0.1 at batch 128, scaled to 5.
        assert train[-1]['lr'] == pytest.approx(0.1 * 5 / 128)

    rows = open(osp.join(out, 'curves', 'summary.md')).read()
    for head in ('teacher', 'student1', 'student2', 'student3', 'ensemble'):
        assert f'| teskd_resnet18_cifar10jpg | {head} | 1 |' in rows
    assert '| baseline_resnet18_cifar10jpg | model | 1 |' in rows
    assert '| baseline_resnet18_cifar10jpg | student1' not in rows
    for png in ('curves.png', 'summary.png'):
        assert osp.getsize(osp.join(out, 'curves', png)) > 2000

    # Running again into the same folder does not replace its subset.
    proc = run_runner('cifar10jpg', out, env=env)
    assert proc.returncode == 2
    assert 'exists: remove it or choose another OUT_DIR' in proc.stderr
