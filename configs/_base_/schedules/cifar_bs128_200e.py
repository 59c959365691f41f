# The CIFAR schedule of the paper and the released code: SGD, lr 0.1 with
# Nesterov momentum 0.9, weight decay 5e-4, 200 epochs, lr x0.1 at 100 and
# 150 (mmpretrain's schedule has the epochs and steps already).
_base_ = 'mmpretrain::_base_/schedules/cifar10_bs128.py'

optim_wrapper = dict(
    optimizer=dict(lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True))
