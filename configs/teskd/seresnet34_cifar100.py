# TESKD with a CIFAR SE-ResNet-34 ("SENet-34") on CIFAR-100 (Table 1).
_base_ = './resnet18_cifar100.py'

model = dict(backbone=dict(type='SEResNet_CIFAR', depth=34))
