"""The CIFAR stem, for any backbone of mmpretrain's ResNet family."""
from mmpretrain.models.backbones import ResNet_CIFAR


class CIFARStemMixin:
    """The stem of :class:`mmpretrain.models.ResNet_CIFAR` (a 3x3 stride-1
    convolution, no max-pool), so a 32x32 image gives four stages of 32, 16,
    8 and 4 pixels. Put it first among the bases of a ``ResNet`` subclass:
    ``class SEResNet_CIFAR(CIFARStemMixin, SEResNet)``.

    Args:
        depth (int): Network depth.
        deep_stem (bool): Not supported; must be False.
        **kwargs: The other arguments of the backbone.
    """

    def __init__(self, depth: int, deep_stem: bool = False, **kwargs) -> None:
        if deep_stem:
            raise ValueError(
                f'{type(self).__name__} has the 3x3 stride-1 stem of '
                'ResNet_CIFAR; set deep_stem=False.')
        super().__init__(depth, deep_stem=False, **kwargs)

    _make_stem_layer = ResNet_CIFAR._make_stem_layer
    forward = ResNet_CIFAR.forward
