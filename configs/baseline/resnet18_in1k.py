# The plain ResNet-18 on ImageNet-1k with TESKD's recipe (Table 2): 90
# epochs, lr x0.1 at 30 and 60, batch 8 GPUs x 32 = 256, weight decay 1e-4.
_base_ = [
    'mmpretrain::_base_/models/resnet18.py',
    'mmpretrain::_base_/datasets/imagenet_bs32.py',
    'mmpretrain::_base_/schedules/imagenet_bs256.py',
    'mmpretrain::_base_/default_runtime.py',
]

optim_wrapper = dict(optimizer=dict(nesterov=True))
param_scheduler = dict(milestones=[30, 60])
train_cfg = dict(max_epochs=90)
