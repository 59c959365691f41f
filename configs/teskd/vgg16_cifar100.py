# TESKD with a CIFAR VGG-16 (BN) on CIFAR-100 (Table 1).
_base_ = './resnet18_cifar100.py'

# Stages 128@8x8, 256@4x4, 512@2x2, 512@1x1; as released, the students
# end at 2x2 (kernels 4, 2, 1) over the teacher's 1x1 last stage.
model = dict(
    backbone=dict(
        _delete_=True, type='VGG_CIFAR', depth=16, out_indices=(0, 1, 2, 3)),
    neck=dict(in_channels=(128, 256, 512, 512)),
    head=dict(branch_end_scale=2))
