"""SE-ResNet for 32x32 inputs, with the basic-block depths 18 and 34."""
import torch
import torch.utils.checkpoint as cp

from mmpretrain.models.backbones import SEResNet
from mmpretrain.models.backbones.resnet import BasicBlock
from mmpretrain.models.utils import SELayer
from mmpretrain.registry import MODELS

from .cifar_stem import CIFARStemMixin


class SEBasicBlock(BasicBlock):
    """ResNet's basic block with a Squeeze-and-Excitation layer.

    As in the SE-ResNet module of Hu et al. (and mmpretrain's
    ``SEBottleneck``), the SE layer rescales the residual branch after its
    last norm layer, before the identity is added.

    Args:
        in_channels (int): Input channels of this block.
        out_channels (int): Output channels of this block.
        se_ratio (int): Squeeze ratio: the SE layer squeezes to
            ``out_channels // se_ratio`` channels. Defaults to 16.
        **kwargs: The other arguments of :class:`BasicBlock`.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 se_ratio: int = 16,
                 **kwargs) -> None:
        super().__init__(in_channels, out_channels, **kwargs)
        self.se_layer = SELayer(
            out_channels, squeeze_channels=max(out_channels // se_ratio, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:

        def _inner_forward(x):
            identity = x
            out = self.relu(self.norm1(self.conv1(x)))
            out = self.se_layer(self.norm2(self.conv2(out)))
            if self.downsample is not None:
                identity = self.downsample(x)
            return self.drop_path(out) + identity

        if self.with_cp and x.requires_grad:
            out = cp.checkpoint(_inner_forward, x)
        else:
            out = _inner_forward(x)
        return self.relu(out)


@MODELS.register_module()
class SEResNet_CIFAR(CIFARStemMixin, SEResNet):
    """SE-ResNet backbone for CIFAR.

    :class:`mmpretrain.models.SEResNet` with the stem of
    :class:`mmpretrain.models.ResNet_CIFAR` (a 3x3 stride-1 convolution, no
    max-pool), so a 32x32 image gives four stages of 32, 16, 8 and 4 pixels.
    Besides mmpretrain's bottleneck depths 50, 101 and 152 it has the depths
    18 and 34 of the SENet-18/34 used on CIFAR (the paper's "SENet-34"):
    ResNet-18/34 whose basic blocks carry an SE layer (:class:`SEBasicBlock`),
    with stages of 64, 128, 256 and 512 channels.

    Args:
        depth (int): Network depth, from {18, 34, 50, 101, 152}.
        deep_stem (bool): Not supported; must be False.
        **kwargs: The other arguments of :class:`SEResNet`.
    """

    arch_settings = {
        18: (SEBasicBlock, (2, 2, 2, 2)),
        34: (SEBasicBlock, (3, 4, 6, 3)),
        **SEResNet.arch_settings
    }
