# The plain CIFAR ResNet-18 on CIFAR-100 with TESKD's recipe: the Baseline
# row of Table 1.
_base_ = [
    'mmpretrain::_base_/models/resnet18_cifar.py',
    '../_base_/datasets/cifar100_bs128.py',
    '../_base_/schedules/cifar_bs128_200e.py',
    '../_base_/default_runtime.py',
]

model = dict(head=dict(num_classes=100))
