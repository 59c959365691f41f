"""The CIFAR backbones: stage layout, widths, what they keep of mmpretrain."""
import pytest
import torch

from mmpretrain.models.backbones import VGG, ResNet_CIFAR, SEResNet

from teskd_mm.models.backbones import (VGG_CIFAR, ResNeXt_CIFAR,
                                       ResNeXtBasicBlock, SEResNet_CIFAR)

from conftest import n_params

RESNET_STAGES = [(64, 32), (128, 16), (256, 8), (512, 4)]


# Parameter counts of the published CIFAR networks' feature extractors,
# worked out layer by layer from their description (no classifier).
def _bn(c):
    return 2 * c


def _conv(cin, cout, k, bias=False):
    return cin * cout * k * k + (cout if bias else 0)


def _resnet_like(blocks, block_params):
    total, cin = _conv(3, 64, 3) + _bn(64), 64
    for width, num, stride in zip((64, 128, 256, 512), blocks, (1, 2, 2, 2)):
        for i in range(num):
            total += block_params(cin, width)
            if i == 0 and (stride != 1 or cin != width):
                total += _conv(cin, width, 1) + _bn(width)
            cin = width
    return total


def _wide_basic(cin, c):  # 3x3 to 2c, 3x3 back to c
    return _conv(cin, 2 * c, 3) + _bn(2 * c) + _conv(2 * c, c, 3) + _bn(c)


def _se_basic(cin, c):  # basic block + SE (1x1 convs with bias, ratio 16)
    r = c // 16
    return (_conv(cin, c, 3) + _bn(c) + _conv(c, c, 3) + _bn(c) +
            c * r + r + r * c + c)


def _vgg(widths):
    total, cin = 0, 3
    for c in widths:
        total, cin = total + _conv(cin, c, 3, bias=True) + _bn(c), c
    return total


@pytest.mark.parametrize('cls,depth,expected', [
    (ResNeXt_CIFAR, 18, _resnet_like((2, 2, 2, 2), _wide_basic)),
    (ResNeXt_CIFAR, 34, _resnet_like((3, 4, 6, 3), _wide_basic)),
    (SEResNet_CIFAR, 34, _resnet_like((3, 4, 6, 3), _se_basic)),
])
def test_resnet_family_stages_and_size(cls, depth, expected):
    model = cls(depth, out_indices=(0, 1, 2, 3))
    outs = model(torch.rand(1, 3, 32, 32))
    assert [(o.shape[1], o.shape[-1]) for o in outs] == RESNET_STAGES
    assert n_params(model) == expected


@pytest.mark.parametrize('depth,widths', [
    (16, [64] * 2 + [128] * 2 + [256] * 3 + [512] * 6),
    (19, [64] * 2 + [128] * 2 + [256] * 4 + [512] * 8),
])
def test_vgg_cifar_is_mmpretrain_vgg_regrouped(depth, widths):
    model = VGG_CIFAR(depth, out_indices=(0, 1, 2, 3))
    assert n_params(model) == _vgg(widths)
    # The same layers as mmpretrain's VGG with BN: the weights load one to
    # one and the four stages are VGG's stages 1-4.
    stock = VGG(depth, norm_cfg=dict(type='BN'), out_indices=(1, 2, 3, 4))
    stock.load_state_dict(model.state_dict(), strict=True)
    model.eval()
    stock.eval()
    x = torch.rand(2, 3, 32, 32)
    outs, stock_outs = model(x), stock(x)
    assert [(o.shape[1], o.shape[-1]) for o in outs] == \
        [(128, 8), (256, 4), (512, 2), (512, 1)]
    for a, b in zip(outs, stock_outs):
        torch.testing.assert_close(a, b)


def test_cifar_stem_keeps_full_resolution_and_the_rest_of_seresnet():
    model = SEResNet_CIFAR(50, out_indices=(0, 1, 2, 3))
    stock = SEResNet(50, out_indices=(0, 1, 2, 3))
    ours, theirs = model.state_dict(), stock.state_dict()
    assert ours.keys() == theirs.keys()
    # Only the stem convolution differs: 3x3 instead of 7x7.
    differ = [k for k in ours if ours[k].shape != theirs[k].shape]
    assert differ == ['conv1.weight']
    assert tuple(ours['conv1.weight'].shape) == (64, 3, 3, 3)
    assert not hasattr(model, 'maxpool')
    outs = model(torch.rand(1, 3, 32, 32))
    assert [o.shape[-1] for o in outs] == [32, 16, 8, 4]


def test_resnext_basic_block_width():
    block = ResNeXtBasicBlock(64, 128, groups=32, width_per_group=4)
    assert block.conv1.out_channels == 256 and block.conv2.in_channels == 256
    assert block.conv1.groups == block.conv2.groups == 1
    # One path of width 64 is ResNet's basic block: same size as ResNet-18.
    plain = ResNeXt_CIFAR(18, groups=1, width_per_group=64)
    assert n_params(plain) == n_params(ResNet_CIFAR(18))
    with pytest.raises(ValueError, match='multiple of base_channels=64'):
        ResNeXtBasicBlock(64, 100, groups=3, width_per_group=7)


def test_se_block_squeezes_by_the_ratio():
    model = SEResNet_CIFAR(18, se_ratio=8)
    se = model.layer4[0].se_layer
    assert (se.conv1.conv.in_channels, se.conv1.conv.out_channels) == (512, 64)


def test_vgg_cifar_freezing_counts_the_stem_first():
    model = VGG_CIFAR(16, frozen_stages=0)
    model.train()
    frozen = [not p.requires_grad for p in model.features.parameters()]
    # The stem: two conv-BN pairs of 4 tensors each.
    assert frozen[:8] == [True] * 8 and not any(frozen[8:])


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match=r'among \(0, 1, 2, 3\)'):
        VGG_CIFAR(16, out_indices=(4, ))
    with pytest.raises(ValueError, match='one dilation per stage, 4'):
        VGG_CIFAR(16, dilations=(1, 1, 1, 1, 1))
    with pytest.raises(ValueError, match='deep_stem=False'):
        SEResNet_CIFAR(34, deep_stem=True)
    with pytest.raises(ValueError, match='deep_stem=False'):
        ResNeXt_CIFAR(18, deep_stem=True)
    with pytest.raises(KeyError, match='invalid depth 26'):
        ResNeXt_CIFAR(26)
