# The plain CIFAR VGG-16 (BN) on CIFAR-100 with TESKD's recipe (Table 1).
_base_ = './resnet18_cifar100.py'

model = dict(
    backbone=dict(
        _delete_=True, type='VGG_CIFAR', depth=16, out_indices=(3, )))
