# The plain CIFAR ResNet-18 on CIFAR-100 with the training recipe of the
# authors' released code, where it differs from the default config: the
# Baseline row of Table 1 as the released code trains it (README, "Default
# vs released recipe"). Trains on a CUDA GPU only: AmpOptimWrapper needs one.
_base_ = './resnet18_cifar100.py'

# PyTorch's default initialisation, as released: every Conv2d, Linear and
# BN keeps the values it is constructed with. mmpretrain's defaults instead
# zero the last BN of every residual block (zero_init_residual), draw the
# convs kaiming_normal and the Linear layer Normal(0.01).
model = dict(
    backbone=dict(zero_init_residual=False, init_cfg=None),
    head=dict(init_cfg=None))

# CIFAR-100 normalised with CIFAR-10's mean and std, as released:
# (0.4914, 0.4822, 0.4465) and (0.2023, 0.1994, 0.2010), times 255.
data_preprocessor = dict(
    mean=[125.307, 122.961, 113.8575], std=[51.5865, 50.847, 51.255])

# fp16 autocast with a dynamic gradient scaler, as released (torch.cuda.amp
# autocast and GradScaler).
optim_wrapper = dict(
    type='AmpOptimWrapper', dtype='float16', loss_scale='dynamic')
