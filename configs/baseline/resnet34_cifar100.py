# The plain CIFAR ResNet-34 on CIFAR-100 with TESKD's recipe (Table 1).
_base_ = './resnet18_cifar100.py'

model = dict(backbone=dict(depth=34))
