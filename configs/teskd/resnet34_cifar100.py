# TESKD with a CIFAR ResNet-34 on CIFAR-100 (Table 1).
_base_ = './resnet18_cifar100.py'

model = dict(backbone=dict(depth=34))
