# TESKD with a CIFAR VGG-19 (BN) on CIFAR-100 (Table 1).
_base_ = './vgg16_cifar100.py'

model = dict(backbone=dict(depth=19))
