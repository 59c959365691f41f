# TESKD with an ImageNet ResNet-18 on Imagenette folders, with the paper's
# ImageNet recipe (Table 2): 90 epochs, lr 0.1 x0.1 at 30 and 60, batch 256,
# weight decay 1e-4, Nesterov momentum, alpha1 = 0.8.
_base_ = [
    '../_base_/models/teskd_resnet18.py',
    '../_base_/datasets/imagenette_bs256.py',
    '../_base_/schedules/imagenet_bs256_90e.py',
    '../_base_/default_runtime.py',
]

model = dict(head=dict(num_classes=10))
val_evaluator = dict(type='MultiBranchAccuracy')
test_evaluator = val_evaluator
