"""TESKD added to stock mmpretrain configs by a short config inheriting them,
as the README shows; what does not fit is named with the value that fits."""
import os.path as osp
import re

import pytest
import torch
from mmengine.config import Config

from mmpretrain.registry import MODELS

from teskd_mm.apis.deploy import stock_model_cfg
from teskd_mm.utils import ConfigCheckError, check_config

from conftest import ROOT, expected_loss_keys, n_params, train_one_step

README = osp.join(ROOT, 'configs', 'teskd', 'README.md')

# The README's table: a stock config of each family and what to set.
TEMPLATE = """
_base_ = 'mmpretrain::{base}'
custom_imports = dict(imports=['teskd_mm'], allow_failed_imports=False)
model = dict(
    backbone=dict(out_indices={out_indices}{backbone_extra}),
    neck=dict({neck_delete}type='MFMNeck', in_channels={channels},
              out_channels={width}),
    head=dict(_delete_=True, type='MultiBranchClsHead',
              num_classes={num_classes}, in_channels={channels[3]},
              branch_in_channels={width}, branch_channels={channels[3]}))
"""
FAMILIES = {
    'resnet18_cifar': dict(
        base='resnet/resnet18_8xb16_cifar10.py', out_indices=(0, 1, 2, 3),
        channels=(64, 128, 256, 512), num_classes=10),
    # Its config has no neck to delete.
    'convnext_tiny': dict(
        base='convnext/convnext-tiny_32xb128_in1k.py',
        out_indices=(0, 1, 2, 3), channels=(96, 192, 384, 768),
        backbone_extra=', gap_before_final_norm=False', neck_delete=''),
    'mobilenet_v2': dict(
        base='mobilenet_v2/mobilenet-v2_8xb32_in1k.py',
        out_indices=(1, 2, 4, 7), channels=(24, 32, 96, 1280)),
    'regnetx_400mf': dict(
        base='regnet/regnetx-400mf_8xb128_in1k.py', out_indices=(0, 1, 2, 3),
        channels=(32, 64, 160, 384)),
}


def mixin(tmp_path, family: str, **changes) -> Config:
    values = dict(backbone_extra='', neck_delete='_delete_=True, ',
                  num_classes=1000, width=256)
    values.update(FAMILIES[family])
    values.update(changes)
    path = tmp_path / f'teskd_{family}.py'
    path.write_text(TEMPLATE.format(**values))
    return Config.fromfile(str(path))


def stock(tmp_path, base: str) -> Config:
    """The stock config, loaded the way the mix-in loads it."""
    path = tmp_path / 'stock.py'
    path.write_text(f"_base_ = 'mmpretrain::{base}'\n")
    return Config.fromfile(str(path))


def readme_example() -> str:
    text = open(README).read()
    section = text.split('## Adding TESKD to another config', 1)[1]
    return re.search(r'```python\n(.*?)```', section, re.S).group(1)


def check_trains_and_deploys(cfg: Config, stock: Config) -> None:
    """Two training steps; the teacher is the stock model, parameter for
    parameter."""
    model, losses, changed = train_one_step(cfg, steps=2)
    assert set(losses) == expected_loss_keys(cfg.model.head) | {'loss'}
    assert all(torch.isfinite(v) for v in losses.values())
    assert all(changed)
    assert n_params(stock_model_cfg(cfg.model)) == n_params(stock.model)


def test_readme_example_trains_and_deploys_to_stock_resnet50(tmp_path):
    code = readme_example()
    assert "_base_ = 'mmpretrain::resnet/resnet50_8xb32_in1k.py'" in code
    path = tmp_path / 'teskd_resnet50.py'
    path.write_text(code)
    cfg = Config.fromfile(str(path))
    stock_cfg = stock(tmp_path, 'resnet/resnet50_8xb32_in1k.py')
    check_trains_and_deploys(cfg, stock_cfg)
    # Nothing but the model and the checkpoint hook's type changed (plus
    # the reliability hooks the stock config has none of).
    for key in ('train_dataloader', 'optim_wrapper', 'param_scheduler',
                'train_cfg'):
        assert cfg[key] == stock_cfg[key], key
    hooks = cfg.default_hooks.to_dict()
    assert hooks.pop('checkpoint') == dict(
        stock_cfg.default_hooks.checkpoint, type='SafeCheckpointHook')
    assert hooks == {k: v for k, v in stock_cfg.default_hooks.items()
                     if k != 'checkpoint'}
    assert [h['type'] for h in cfg.custom_hooks] == [
        'EpochSeedHook', 'NonFiniteLossHook', 'SyncBuffersHook']


@pytest.mark.parametrize('family', list(FAMILIES))
def test_mixin_on_stock_config(family, tmp_path):
    cfg = mixin(tmp_path, family)
    check_trains_and_deploys(cfg, stock(tmp_path, FAMILIES[family]['base']))


def step_error(cfg: Config, size: int) -> str:
    from teskd_mm.utils.inputs import dummy_batch
    model = MODELS.build(cfg.model)
    model.train()
    batch = dummy_batch(cfg, size=(size, size), num_classes=10)
    with pytest.raises(ValueError) as e:
        model.loss(*model.data_preprocessor(batch, True).values())
    return str(e.value)


def test_mismatches_name_what_fits(tmp_path):
    # The backbone's default out_indices=(3, ) gives one stage.
    cfg = mixin(tmp_path, 'resnet18_cifar', out_indices=(3, ))
    assert 'set the backbone\'s out_indices=(0, 1, 2, 3)' in \
        step_error(cfg, 32)
    cfg = mixin(tmp_path, 'resnet18_cifar', channels=(64, 128, 256, 1024))
    assert "set the neck's in_channels=(64, 128, 256, 512)" in \
        step_error(cfg, 32)
    # 36 px: the stages of the CIFAR ResNet-18 are 36, 18, 9 and 5 px.
    cfg = mixin(tmp_path, 'resnet18_cifar')
    assert 'stage 3 is (9, 9) and stage 4 is (5, 5)' in step_error(cfg, 36)
    cfg.model.head.branch_channels = 256
    assert 'set branch_channels=512, or the loss\'s fea_weight=0' in \
        step_error(cfg, 32)


def test_preflight_names_the_data_sets_class_count(tmp_path, cifar10_mini):
    """tools/train.py refuses a head of 1000 classes over CIFAR-10."""
    cfg = mixin(tmp_path, 'resnet18_cifar', num_classes=1000)
    for split, prefix in (('train', 'train'), ('val', 'test')):
        loader = cfg[f'{split}_dataloader']
        loader.num_workers = 0
        loader.persistent_workers = False
        loader.dataset = dict(
            type='CustomDataset',
            data_root=cifar10_mini,
            data_prefix=prefix,
            pipeline=loader.dataset.pipeline)
    cfg.test_dataloader = cfg.val_dataloader
    with pytest.raises(ConfigCheckError,
                       match=r'num_classes=1000 but .* has 10 classes; set '
                       r'model\.head\.num_classes=10'):
        check_config(cfg, 'train')
    # With the data set's count, the same config passes the check.
    cfg.model.head.num_classes = 10
    check_config(cfg, 'train')
