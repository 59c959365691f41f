from .resnext_cifar import ResNeXt_CIFAR, ResNeXtBasicBlock
from .seresnet_cifar import SEBasicBlock, SEResNet_CIFAR
from .vgg_cifar import VGG_CIFAR

__all__ = [
    'ResNeXt_CIFAR', 'ResNeXtBasicBlock', 'SEBasicBlock', 'SEResNet_CIFAR',
    'VGG_CIFAR'
]
