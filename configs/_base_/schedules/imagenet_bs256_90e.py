# The ImageNet schedule of the paper and the released code: SGD, lr 0.1 with
# Nesterov momentum 0.9, weight decay 1e-4, batch 256, 90 epochs, lr x0.1
# at 30 and 60.
_base_ = 'mmpretrain::_base_/schedules/imagenet_bs256.py'

optim_wrapper = dict(optimizer=dict(nesterov=True))
param_scheduler = dict(milestones=[30, 60])
train_cfg = dict(max_epochs=90)
