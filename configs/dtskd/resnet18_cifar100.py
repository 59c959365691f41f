# DTSKD with a CIFAR ResNet-18 on CIFAR-100: the released recipe. The
# network, the loss and the length of the schedule differ from TESKD's
# recipe; data, optimizer and runtime are the same.
_base_ = [
    '../_base_/models/dtskd_resnet18_cifar.py',
    '../_base_/datasets/cifar100_bs128.py',
    '../_base_/schedules/cifar_bs128_200e.py',
    '../_base_/default_runtime.py',
]

model = dict(head=dict(num_classes=100))
val_evaluator = dict(type='MultiBranchAccuracy')
test_evaluator = val_evaluator

# 300 epochs (cosine decay over all of them), lr x0.1 at 150 and 225.
param_scheduler = dict(milestones=[150, 225])
train_cfg = dict(max_epochs=300)
