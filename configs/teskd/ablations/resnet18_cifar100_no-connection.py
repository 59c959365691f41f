# Table 4, "w/o MFM - No Connection": each student level is the upsampled
# level above it alone, with no lateral from the backbone.
_base_ = '../resnet18_cifar100.py'

model = dict(neck=dict(fusion='none'))
