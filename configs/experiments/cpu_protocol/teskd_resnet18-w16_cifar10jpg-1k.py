# The CPU protocol (docs/experiments.md) with TESKD: the baseline's network,
# data and schedule, with the neck, students and loss of the paper's CIFAR
# recipe (0.2 / 0.8 / 1e-7, T = 4) at their defaults for this width (fused
# width = the last stage's, 128).
_base_ = '../../teskd/resnet18_cifar10jpg.py'

model = dict(
    backbone=dict(stem_channels=16, base_channels=16),
    neck=dict(in_channels=(16, 32, 64, 128)),
    head=dict(in_channels=128))

param_scheduler = dict(milestones=[15, 23])
train_cfg = dict(max_epochs=30, val_interval=5)
# Losses logged every 10 steps (means over 10), about 8 times an epoch.
default_hooks = dict(logger=dict(interval=10))
