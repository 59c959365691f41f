# TESKD with ResNet-18 on ImageNet-1k (Table 2): 90 epochs, lr x0.1 at 30 and
# 60, batch 8 GPUs x 32 = 256, weight decay 1e-4, CE 0.8 and KD 0.2.
_base_ = [
    'mmpretrain::_base_/models/resnet18.py',
    'mmpretrain::_base_/datasets/imagenet_bs32.py',
    'mmpretrain::_base_/schedules/imagenet_bs256.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['teskd_mm'], allow_failed_imports=False)

# At 224 px the stages are 64@56, 128@28, 256@14 and 512@7; the students'
# kernels 8, 4, 2 end them all at 7x7.
model = dict(
    backbone=dict(out_indices=(0, 1, 2, 3)),
    neck=dict(
        _delete_=True,
        type='MFMNeck',
        in_channels=(64, 128, 256, 512),
        fusion='mixed',
        students=(1, 2, 3)),
    head=dict(
        _delete_=True,
        type='MultiBranchClsHead',
        num_classes=1000,
        in_channels=512,
        students=(1, 2, 3),
        topk=(1, 5),
        loss=dict(
            type='TESKDLoss',
            ce_weight=0.8,
            kd_weight=0.2,
            fea_weight=1e-7,
            temperature=4.0)))

val_evaluator = dict(type='MultiBranchAccuracy', topk=(1, 5))
test_evaluator = val_evaluator

# The base has lr 0.1, momentum 0.9 and weight decay 1e-4; the released
# training script uses Nesterov momentum for every data set.
optim_wrapper = dict(optimizer=dict(nesterov=True))
param_scheduler = dict(milestones=[30, 60])
train_cfg = dict(max_epochs=90)
