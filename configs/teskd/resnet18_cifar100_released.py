# TESKD with a CIFAR ResNet-18 on CIFAR-100 with the training recipe of the
# authors' released code, where it differs from the default config (the
# method, loss and schedule are the same; README, "Default vs released
# recipe"). Trains on a CUDA GPU only: AmpOptimWrapper needs one.
_base_ = './resnet18_cifar100.py'

# PyTorch's default initialisation, as released. mmpretrain's defaults
# instead zero the last BN of every residual block (zero_init_residual),
# draw the backbone's convs kaiming_normal and the Linear layers
# Normal(0.01); mmcv's ConvModule (the neck's and the students' convs) draws
# kaiming_normal when built, so their init_cfg draws them again as
# nn.Conv2d does: kaiming_uniform, a=sqrt(5), over fan_in. Linear and BN
# layers keep the values they are constructed with. Not reached: the
# neck's lateral_top conv, which ConvModule re-draws after the neck's
# init_cfg, and the students' conv biases, 0 instead of uniform (they sit
# in front of BN, which cancels them). (A name that starts with __ stays
# out of the config.)
__torch_default_conv = dict(
    type='Kaiming',
    layer='Conv2d',
    a=5**0.5,
    mode='fan_in',
    nonlinearity='leaky_relu',
    distribution='uniform')
model = dict(
    backbone=dict(zero_init_residual=False, init_cfg=None),
    neck=dict(init_cfg=__torch_default_conv),
    head=dict(init_cfg=__torch_default_conv))

# CIFAR-100 normalised with CIFAR-10's mean and std, as released:
# (0.4914, 0.4822, 0.4465) and (0.2023, 0.1994, 0.2010), times 255.
data_preprocessor = dict(
    mean=[125.307, 122.961, 113.8575], std=[51.5865, 50.847, 51.255])

# fp16 autocast with a dynamic gradient scaler, as released (torch.cuda.amp
# autocast and GradScaler).
optim_wrapper = dict(
    type='AmpOptimWrapper', dtype='float16', loss_scale='dynamic')
