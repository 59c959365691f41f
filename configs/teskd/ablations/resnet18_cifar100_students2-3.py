# Table 5, second row: students #2 and #3.
_base_ = '../resnet18_cifar100.py'

model = dict(neck=dict(students=(2, 3)), head=dict(students=(2, 3)))
