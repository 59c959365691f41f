# Table 4, "w/o MFM - Concat (FPN style)": S_b = up(S_b+1) + lateral(T_b).
_base_ = '../resnet18_cifar100.py'

model = dict(neck=dict(fusion='add'))
