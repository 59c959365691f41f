# The CPU protocol (docs/experiments.md): the CIFAR ResNet-18 at a quarter
# of its width (stages 16/32/64/128) on 1,000 CIFAR-10 JPEGs per class, the
# CIFAR recipe scaled to 30 epochs, validated every 5 epochs on the whole
# test split. This is the baseline: the plain network trained alone.
_base_ = '../../baseline/resnet18_cifar10jpg.py'

model = dict(
    backbone=dict(stem_channels=16, base_channels=16),
    head=dict(in_channels=128))

# 30 of the recipe's 200 epochs; lr x0.1 after 15 and 23 (its 100 and 150).
param_scheduler = dict(milestones=[15, 23])
train_cfg = dict(max_epochs=30, val_interval=5)
# Losses logged every 10 steps (means over 10), about 8 times an epoch.
default_hooks = dict(logger=dict(interval=10))
