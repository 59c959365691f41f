"""The released training recipe as configs (``*_released.py``).

The authors' code trains with PyTorch's default initialisation, CIFAR-10's
normalisation statistics on CIFAR-100, and fp16 autocast with a gradient
scaler; the default configs use mmpretrain's
initialisation, CIFAR-100's statistics and fp32. Each released config is
its default config plus exactly these differences.

The fp16 recipe cannot train on a CPU: mmengine's AmpOptimWrapper refuses to
be built without a GPU. These tests check the configs and the initial
model, not a training run.
"""
import functools
import math
import os.path as osp

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config

from mmpretrain.registry import MODELS

from conftest import ROOT, model_cfg

RELEASED = {
    # released config: its default counterpart
    'configs/teskd/resnet18_cifar100_released.py':
    'configs/teskd/resnet18_cifar100.py',
    'configs/baseline/resnet18_cifar100_released.py':
    'configs/baseline/resnet18_cifar100.py',
}
# The released code normalises CIFAR-100 with these, on
# images scaled to [0, 1]; mmpretrain normalises 0..255 pixel values.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)
# nn.Conv2d's own draw, in mmengine's terms.
TORCH_DEFAULT_CONV = dict(
    type='Kaiming',
    layer='Conv2d',
    a=math.sqrt(5),
    mode='fan_in',
    nonlinearity='leaky_relu',
    distribution='uniform')
# The released config's settings (as key paths) that its default lacks or
# sets otherwise; nothing else may differ.
CHANGES = {
    'model.backbone.zero_init_residual': False,
    'model.backbone.init_cfg': None,
    'data_preprocessor.mean': [255 * m for m in CIFAR10_MEAN],
    'data_preprocessor.std': [255 * s for s in CIFAR10_STD],
    'optim_wrapper.type': 'AmpOptimWrapper',
    'optim_wrapper.dtype': 'float16',
    'optim_wrapper.loss_scale': 'dynamic',
}
TESKD_CHANGES = dict(
    CHANGES, **{
        f'model.{part}.init_cfg.{k}': v
        for part in ('neck', 'head') for k, v in TORCH_DEFAULT_CONV.items()
    })
BASELINE_CHANGES = dict(CHANGES, **{'model.head.init_cfg': None})


@functools.lru_cache(None)
def load(path: str) -> Config:
    return Config.fromfile(osp.join(ROOT, path))


def flat(d, prefix: str = '') -> dict:
    """A config as ``{'a.b.c': value}``; lists and tuples are values."""
    out = {}
    for key, value in d.items():
        if isinstance(value, dict) and value:
            out.update(flat(value, f'{prefix}{key}.'))
        else:
            out[f'{prefix}{key}'] = value
    return out


@pytest.mark.parametrize('released', RELEASED)
def test_released_config_is_its_default_plus_the_three_changes(released):
    new = flat(load(released).to_dict())
    old = flat(load(RELEASED[released]).to_dict())
    expected = TESKD_CHANGES if '/teskd/' in released else BASELINE_CHANGES
    changed = {
        k: new.get(k, '<absent>')
        for k in set(new) | set(old) if new.get(k, '<absent>') != old.get(
            k, '<absent>')
    }
    assert set(changed) == set(expected)
    for key, value in expected.items():
        assert changed[key] == pytest.approx(value, abs=1e-9), key
    # What the defaults have there instead.
    assert old['data_preprocessor.mean'] == [129.304, 124.07, 112.434]
    assert old['data_preprocessor.std'] == [68.17, 65.392, 70.418]
    assert 'optim_wrapper.type' not in old  # mmengine's OptimWrapper, fp32


@pytest.mark.parametrize('released', RELEASED)
def test_released_preprocessor_normalises_with_cifar10_statistics(released):
    cfg = load(released)
    pre = build(released).data_preprocessor
    torch.testing.assert_close(
        pre.mean.flatten(), 255 * torch.tensor(CIFAR10_MEAN))
    torch.testing.assert_close(pre.std.flatten(),
                               255 * torch.tensor(CIFAR10_STD))
    assert cfg.data_preprocessor.to_rgb is False  # CIFAR arrays are RGB
    assert cfg.data_preprocessor.num_classes == 100


@pytest.mark.parametrize('released', RELEASED)
def test_released_optimizer_is_fp16_autocast_with_dynamic_scaling(released):
    wrapper = load(released).optim_wrapper
    assert wrapper.type == 'AmpOptimWrapper'
    assert wrapper.dtype == 'float16'
    assert wrapper.loss_scale == 'dynamic'
    # The optimizer itself is the default's.
    default = load(RELEASED[released]).optim_wrapper
    assert wrapper.optimizer == default.optimizer


@pytest.mark.skipif(torch.cuda.is_available(), reason='a CPU-only check')
def test_amp_cannot_be_built_on_a_cpu():
    """Why no test here trains the released recipe."""
    from mmengine.optim import build_optim_wrapper
    with pytest.raises(AssertionError, match='only available training on gpu'):
        build_optim_wrapper(nn.Linear(2, 2),
                            load(next(iter(RELEASED))).optim_wrapper)


# -- the initial model --------------------------------------------------------
@functools.lru_cache(None)
def build(path: str) -> nn.Module:
    """The model as the Runner builds and initialises it."""
    torch.manual_seed(0)
    model = MODELS.build(model_cfg(load(path)))
    model.init_weights()
    return model


def layers(model):
    """Every module of backbone, neck and head that holds parameters of its
    own, by name."""
    for part in ('backbone', 'neck', 'head'):
        for name, module in getattr(model, part).named_modules():
            if list(module.parameters(recurse=False)):
                yield f'{part}.{name}', module


def check_default_init(name: str, m: nn.Module) -> None:
    """``m`` holds what PyTorch draws when it builds the layer."""
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        assert torch.equal(m.weight, torch.ones_like(m.weight)), name
        assert torch.equal(m.bias, torch.zeros_like(m.bias)), name
        return
    assert isinstance(m, (nn.Conv2d, nn.Linear)), \
        f'{name}: {type(m).__name__} is not checked here'
    # kaiming_uniform(a=sqrt(5)) over fan_in: U(-b, b), b = 1 / sqrt(fan_in);
    # the bias: U(-b, b) too.
    w = m.weight.detach()
    bound = 1 / math.sqrt(w[0].numel())
    assert w.abs().max() <= bound * (1 + 1e-6), name
    # Spread over the whole range, with a uniform's std (not a normal's or
    # a constant): within 5 % for the thousands of values of every layer.
    assert w.numel() >= 1000, name
    assert abs(w.std().item() / (bound / math.sqrt(3)) - 1) < 0.05, name
    assert w.abs().max() > 0.9 * bound, name
    if m.bias is not None:
        b = m.bias.detach()
        assert b.abs().max() <= bound * (1 + 1e-6), name
        if isinstance(m, nn.Linear):
            assert b.abs().max() > 0.5 * bound, name
        # The students' conv biases stay 0 (ConvModule zeroes them when
        # built; mmengine's initialisers fill biases with a constant): they
        # sit in front of BN, which subtracts them again, so they receive no
        # gradient and do not change the function.


@pytest.mark.parametrize('released', RELEASED)
def test_released_model_starts_from_pytorch_default_init(released):
    model = build(released)
    checked = set()
    for name, module in layers(model):
        check_default_init(name, module)
        checked.add(type(module))
    assert checked == {nn.Conv2d, nn.Linear, nn.BatchNorm2d}
    # No BN starts at zero (mmpretrain's zero_init_residual would).
    assert all((m.weight != 0).all() for m in model.modules()
               if isinstance(m, nn.BatchNorm2d))


def test_released_neck_top_lateral_starts_from_pytorch_default_init():
    """mmengine initialises the neck's direct child ConvModule after the
    neck's init_cfg (its conv re-drawn kaiming_normal); MFMNeck applies its
    init_cfg to it again."""
    model = build(next(iter(RELEASED)))
    check_default_init('neck.lateral_top.conv', model.neck.lateral_top.conv)


@pytest.mark.parametrize('released', RELEASED)
def test_default_model_does_not(released):
    """The check above tells the two recipes apart."""
    model = build(RELEASED[released])
    zero_bn = [
        name for name, m in layers(model)
        if isinstance(m, nn.BatchNorm2d) and not m.weight.any()
    ]
    assert len(zero_bn) == 8  # the last BN of each of the 8 BasicBlocks
    with pytest.raises(AssertionError):
        check_default_init('backbone.conv1', model.backbone.conv1)
    with pytest.raises(AssertionError):
        check_default_init('head.fc', model.head.fc)
