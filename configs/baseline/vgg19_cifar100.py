# The plain CIFAR VGG-19 (BN) on CIFAR-100 with TESKD's recipe (Table 1).
_base_ = './vgg16_cifar100.py'

model = dict(backbone=dict(depth=19))
