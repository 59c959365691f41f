# The plain CIFAR ResNet-18 on CIFAR-100 with TESKD's recipe: the Baseline row.
_base_ = [
    'mmpretrain::_base_/models/resnet18_cifar.py',
    'mmpretrain::_base_/datasets/cifar100_bs16.py',
    'mmpretrain::_base_/schedules/cifar10_bs128.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['teskd_mm'], allow_failed_imports=False)

model = dict(head=dict(num_classes=100))

train_dataloader = dict(batch_size=128, dataset=dict(type='CheckedCIFAR100'))
val_dataloader = dict(batch_size=128, dataset=dict(type='CheckedCIFAR100'))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, 5))
test_evaluator = val_evaluator

optim_wrapper = dict(
    optimizer=dict(lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True))
param_scheduler = dict(milestones=[100, 150])
train_cfg = dict(max_epochs=200)

default_hooks = dict(
    checkpoint=dict(save_best='accuracy/top1', rule='greater', max_keep_ckpts=3))
