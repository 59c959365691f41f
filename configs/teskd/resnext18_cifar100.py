# TESKD with a CIFAR ResNeXt-18 (32x4d basic blocks) on CIFAR-100 (Table 1).
_base_ = './resnet18_cifar100.py'

model = dict(backbone=dict(type='ResNeXt_CIFAR', depth=18))
