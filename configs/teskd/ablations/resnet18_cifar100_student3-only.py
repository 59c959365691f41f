# Table 5, first row: only student #3 (on the deepest fused level).
_base_ = '../resnet18_cifar100.py'

model = dict(neck=dict(students=(3, )), head=dict(students=(3, )))
