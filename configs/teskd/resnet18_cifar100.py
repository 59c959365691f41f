# TESKD with a CIFAR ResNet-18 on CIFAR-100: the paper's headline recipe
# (Table 1); the teacher's, every student's and the ensemble's accuracy are
# validated.
_base_ = [
    '../_base_/models/teskd_resnet18_cifar.py',
    '../_base_/datasets/cifar100_bs128.py',
    '../_base_/schedules/cifar_bs128_200e.py',
    '../_base_/default_runtime.py',
]

model = dict(head=dict(num_classes=100))
val_evaluator = dict(type='MultiBranchAccuracy')
test_evaluator = val_evaluator
