# The CPU protocol (docs/experiments.md) with DTSKD: its released recipe's
# network and loss (weights, cosine decay over the 30 epochs) at this width,
# on the protocol's 10,000 training images and schedule.
_base_ = [
    '../../_base_/models/dtskd_resnet18_cifar.py',
    '../../_base_/datasets/cifar10jpg_bs128.py',
    '../../_base_/schedules/cifar_bs128_200e.py',
    '../../_base_/default_runtime.py',
]

model = dict(
    backbone=dict(stem_channels=16, base_channels=16),
    neck=dict(in_channels=(16, 32, 64, 128)),
    head=dict(in_channels=128, loss=dict(num_samples=10000)))
val_evaluator = dict(type='MultiBranchAccuracy')
test_evaluator = val_evaluator

param_scheduler = dict(milestones=[15, 23])
train_cfg = dict(max_epochs=30, val_interval=5)
# Losses logged every 10 steps (means over 10), about 8 times an epoch.
default_hooks = dict(logger=dict(interval=10))
