# TESKD with a CIFAR ResNet-18 on CIFAR-10 stored as JPEG class folders, with
# the CIFAR recipe of the paper.
_base_ = [
    '../_base_/models/teskd_resnet18_cifar.py',
    '../_base_/datasets/cifar10jpg_bs128.py',
    '../_base_/schedules/cifar_bs128_200e.py',
    '../_base_/default_runtime.py',
]

val_evaluator = dict(type='MultiBranchAccuracy')
test_evaluator = val_evaluator
