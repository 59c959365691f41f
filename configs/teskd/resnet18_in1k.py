# TESKD with ResNet-18 on ImageNet-1k (Table 2): 90 epochs, lr x0.1 at 30 and
# 60, batch 8 GPUs x 32 = 256, weight decay 1e-4, CE 0.8 and KD 0.2.
_base_ = [
    '../_base_/models/teskd_resnet18.py',
    'mmpretrain::_base_/datasets/imagenet_bs32.py',
    '../_base_/schedules/imagenet_bs256_90e.py',
    '../_base_/default_runtime.py',
]

val_evaluator = dict(type='MultiBranchAccuracy')
test_evaluator = val_evaluator
