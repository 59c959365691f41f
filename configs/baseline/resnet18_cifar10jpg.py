# The plain CIFAR ResNet-18 on CIFAR-10 JPEG folders: the TESKD config with
# the fusion neck and the students taken out, so data, schedule and seed
# handling are the same by construction.
_base_ = ['../teskd/resnet18_cifar10jpg.py']

model = dict(
    backbone=dict(out_indices=(3, )),
    neck=dict(_delete_=True, type='GlobalAveragePooling'),
    head=dict(
        _delete_=True,
        type='LinearClsHead',
        num_classes={{_base_.num_classes}},
        in_channels=512,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        topk=(1, 5)))

val_evaluator = dict(_delete_=True, type='Accuracy', topk=(1, 5))
test_evaluator = val_evaluator
