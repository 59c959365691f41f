# TESKD with an ImageNet ResNet-18 on Imagenette (10 ImageNet classes) in
# class folders (train/<wnid>/*.JPEG, val/<wnid>/*.JPEG), read by
# mmpretrain's CustomDataset; the paper's ImageNet recipe: 90 epochs, lr 0.1
# divided by 10 at 30 and 60, batch 256 on one GPU, weight decay 1e-4,
# alpha1 = 0.8. Point it elsewhere with IMAGENETTE_ROOT=/path/to/folders.
_base_ = [
    'mmpretrain::_base_/models/resnet18.py',
    'mmpretrain::_base_/datasets/imagenet_bs32.py',
    'mmpretrain::_base_/schedules/imagenet_bs256.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['teskd_mm'], allow_failed_imports=False)

data_root = '{{$IMAGENETTE_ROOT:data/imagenette2-224}}'
num_classes = 10

# Imagenette images are ImageNet images: ImageNet's mean and std apply.
data_preprocessor = dict(num_classes=num_classes)

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
        num_classes=num_classes,
        in_channels=512,
        students=(1, 2, 3),
        loss=dict(
            type='TESKDLoss',
            ce_weight=0.8,
            kd_weight=0.2,
            fea_weight=1e-7,
            temperature=4.0)))

# 256 images per step on one GPU (the paper's batch); with N GPUs, divide by N.
train_dataloader = dict(
    batch_size=256,
    dataset=dict(
        _delete_=True,
        type='CustomDataset',
        data_root=data_root,
        data_prefix='train',
        pipeline={{_base_.train_pipeline}}))
val_dataloader = dict(
    batch_size=64,
    dataset=dict(
        _delete_=True,
        type='CustomDataset',
        data_root=data_root,
        data_prefix='val',
        pipeline={{_base_.test_pipeline}}))
test_dataloader = val_dataloader
val_evaluator = dict(type='MultiBranchAccuracy', topk=(1, 5))
test_evaluator = val_evaluator

param_scheduler = dict(milestones=[30, 60])
train_cfg = dict(max_epochs=90)

default_hooks = dict(
    checkpoint=dict(
        save_best='accuracy/top1', rule='greater', max_keep_ckpts=3))
