# DTSKD with a CIFAR ResNet-18 on CIFAR-100: the released recipe.
_base_ = [
    'mmpretrain::_base_/models/resnet18_cifar.py',
    'mmpretrain::_base_/datasets/cifar100_bs16.py',
    'mmpretrain::_base_/schedules/cifar10_bs128.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['teskd_mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(out_indices=(0, 1, 2, 3)),
    neck=dict(
        _delete_=True,
        type='DTSKDNeck',
        in_channels=(64, 128, 256, 512),
        fusion='mixed',
        students=(1, 2, 3)),
    head=dict(
        _delete_=True,
        type='DTSKDHead',
        num_classes=100,
        in_channels=512,
        students=(1, 2, 3),
        loss=dict(
            type='DTSKDLoss',
            hist_weight=0.2,
            kd_weight=0.8,
            teacher_weight=3.0,
            student_weights=(1.0, 1.0, 1.0),
            temperature=4.0,
            decay='cos',
            cos_max=0.9,
            cos_min=0.0,
            # E of the schedule: None follows train_cfg.max_epochs (300).
            num_epochs=None,
            # One row per training image; 80 MB in float32, 'float16' halves.
            num_samples=50000,
            memory_dtype='float32')))

# Explain where CIFAR-100 goes when it cannot be downloaded.
train_dataloader = dict(batch_size=128, dataset=dict(type='CheckedCIFAR100'))
val_dataloader = dict(batch_size=128, dataset=dict(type='CheckedCIFAR100'))
test_dataloader = val_dataloader
val_evaluator = dict(type='MultiBranchAccuracy', topk=(1, 5))
test_evaluator = val_evaluator

optim_wrapper = dict(
    optimizer=dict(lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True))
param_scheduler = dict(milestones=[150, 225])
train_cfg = dict(max_epochs=300)

default_hooks = dict(
    checkpoint=dict(
        save_best='accuracy/top1', rule='greater', max_keep_ckpts=3))
