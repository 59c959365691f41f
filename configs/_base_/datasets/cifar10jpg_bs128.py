# CIFAR-10 stored as JPEG class folders (train/<class>/*.jpg,
# test/<class>/*.jpg), read by mmpretrain's CustomDataset, with CIFAR's
# augmentation; the same layout works for any small-image folder data set.
# Point it elsewhere with CIFAR10JPG_ROOT=/path/to/folders.
data_root = '{{$CIFAR10JPG_ROOT:data/cifar10-jpg}}'

# Statistics of the 50,000 training JPEGs (RGB, 0-255): mean
# 0.4913/0.4821/0.4465 x 255, std 0.2452/0.2428/0.2606 x 255.
data_preprocessor = dict(
    num_classes=10,
    mean=[125.269, 122.933, 113.863],
    std=[62.534, 61.909, 66.460],
    # LoadImageFromFile decodes to BGR.
    to_rgb=True)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomCrop', crop_size=32, padding=4),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='PackInputs'),
]

train_dataloader = dict(
    batch_size=128,
    num_workers=2,
    dataset=dict(
        type='CustomDataset',
        data_root=data_root,
        data_prefix='train',
        pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True))
val_dataloader = dict(
    batch_size=128,
    num_workers=2,
    dataset=dict(
        type='CustomDataset',
        data_root=data_root,
        data_prefix='test',
        pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False))
val_evaluator = dict(type='Accuracy', topk=(1, 5))

test_dataloader = val_dataloader
test_evaluator = val_evaluator
