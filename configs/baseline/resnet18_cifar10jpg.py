# The plain CIFAR ResNet-18 on CIFAR-10 JPEG folders, with the data, schedule
# and runtime of its TESKD config.
_base_ = [
    'mmpretrain::_base_/models/resnet18_cifar.py',
    '../_base_/datasets/cifar10jpg_bs128.py',
    '../_base_/schedules/cifar_bs128_200e.py',
    '../_base_/default_runtime.py',
]
