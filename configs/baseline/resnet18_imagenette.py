# The plain ImageNet ResNet-18 on Imagenette folders, with the data, schedule
# and runtime of its TESKD config.
_base_ = [
    'mmpretrain::_base_/models/resnet18.py',
    '../_base_/datasets/imagenette_bs256.py',
    '../_base_/schedules/imagenet_bs256_90e.py',
    '../_base_/default_runtime.py',
]

model = dict(head=dict(num_classes=10))
