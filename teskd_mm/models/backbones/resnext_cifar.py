"""ResNeXt for 32x32 inputs, with the basic-block depths 18 and 34."""
from mmcv.cnn import build_conv_layer, build_norm_layer

from mmpretrain.models.backbones import ResNeXt
from mmpretrain.models.backbones.resnet import BasicBlock
from mmpretrain.registry import MODELS

from .cifar_stem import CIFARStemMixin


class ResNeXtBasicBlock(BasicBlock):
    """ResNeXt's aggregated transform in a block of depth two.

    The ResNeXt paper (Xie et al. 2017, Sec. 3.3) notes that a block of depth
    two with ``groups`` paths of width ``width_per_group`` reduces to a wide,
    dense module: the paths all read the whole input and their second layers
    are summed. So the first 3x3 convolution widens to
    ``groups * width_per_group * out_channels // base_channels`` channels
    (twice ``out_channels`` for 32x4d) and the second one maps back to
    ``out_channels``; neither is grouped. This is the width of the
    ResNeXt-18/34 that TESKD was evaluated with.

    Args:
        in_channels (int): Input channels of this block.
        out_channels (int): Output channels of this block.
        base_channels (int): Output channels of the first stage. Defaults to
            64.
        groups (int): Number of paths. Defaults to 32.
        width_per_group (int): Width of each path in the first stage.
            Defaults to 4.
        **kwargs: The other arguments of :class:`BasicBlock`.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 base_channels: int = 64,
                 groups: int = 32,
                 width_per_group: int = 4,
                 **kwargs) -> None:
        super().__init__(in_channels, out_channels, **kwargs)
        self.groups = groups
        self.width_per_group = width_per_group
        mid = groups * width_per_group * out_channels
        if mid % base_channels:
            raise ValueError(
                f'groups * width_per_group * out_channels = {mid} must be a '
                f'multiple of base_channels={base_channels}.')
        self.mid_channels = mid // base_channels
        # Rebuilt at the new width, as mmpretrain's ResNeXt bottleneck does.
        self.norm1_name, norm1 = build_norm_layer(
            self.norm_cfg, self.mid_channels, postfix=1)
        self.conv1 = build_conv_layer(
            self.conv_cfg,
            in_channels,
            self.mid_channels,
            3,
            stride=self.stride,
            padding=self.dilation,
            dilation=self.dilation,
            bias=False)
        self.add_module(self.norm1_name, norm1)
        self.conv2 = build_conv_layer(
            self.conv_cfg,
            self.mid_channels,
            out_channels,
            3,
            padding=1,
            bias=False)


@MODELS.register_module()
class ResNeXt_CIFAR(CIFARStemMixin, ResNeXt):
    """ResNeXt backbone for CIFAR.

    :class:`mmpretrain.models.ResNeXt` with the stem of
    :class:`mmpretrain.models.ResNet_CIFAR` (a 3x3 stride-1 convolution, no
    max-pool), so a 32x32 image gives four stages of 32, 16, 8 and 4 pixels.
    Besides mmpretrain's bottleneck depths 50, 101 and 152 it has the depths
    18 and 34 (blocks (2, 2, 2, 2) and (3, 4, 6, 3)) built of
    :class:`ResNeXtBasicBlock`, whose stages have 64, 128, 256 and 512
    channels, as the paper's ResNeXt-18/34.

    Args:
        depth (int): Network depth, from {18, 34, 50, 101, 152}.
        deep_stem (bool): Not supported; must be False.
        **kwargs: The other arguments of :class:`ResNeXt` (``groups``,
            ``width_per_group``, ...).
    """

    arch_settings = {
        18: (ResNeXtBasicBlock, (2, 2, 2, 2)),
        34: (ResNeXtBasicBlock, (3, 4, 6, 3)),
        **ResNeXt.arch_settings
    }
