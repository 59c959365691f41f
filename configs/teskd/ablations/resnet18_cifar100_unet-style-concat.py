# Table 4, "w/o MFM - Add (UNet style)": S_b = fuse(cat[up(S_b+1),
# lateral(T_b)]), the 1x1 fuse halving the channels.
_base_ = '../resnet18_cifar100.py'

model = dict(neck=dict(fusion='concat'))
