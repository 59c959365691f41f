# A diagnostic beside the CPU protocol (docs/experiments.md): the protocol's
# teskd run at twice the epochs, lr x0.1 after 30 and 45 (the 100/150 of
# 200, as the protocol's 15 and 23 of 30).
_base_ = './teskd_resnet18-w16_cifar10jpg-1k.py'

param_scheduler = dict(milestones=[30, 45])
train_cfg = dict(max_epochs=60)
