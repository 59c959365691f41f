# TESKD on mmpretrain's CIFAR ResNet-18 (3x3 stem, no max-pool), with the
# paper's CIFAR loss weights (alpha1 = 0.2, alpha2 = 0.8). At 32 px the
# stages are 64@32, 128@16, 256@8 and 512@4.
_base_ = './teskd_resnet18.py'

model = dict(
    backbone=dict(type='ResNet_CIFAR'),
    head=dict(num_classes=10, loss=dict(ce_weight=0.2, kd_weight=0.8)))
