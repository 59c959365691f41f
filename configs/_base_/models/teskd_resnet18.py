# TESKD on mmpretrain's ResNet-18: all four stages out of the backbone (the
# last one is the teacher's), the Mixed Fusion Module neck, the teacher
# classifier with three hierarchical students, and the TESKD loss with the
# paper's ImageNet weights (alpha1 = 0.8, alpha2 = 0.2, beta = 1e-7, T = 4).
# At 224 px the stages are 64@56, 128@28, 256@14 and 512@7; the students'
# kernels 8, 4, 2 end them all at 7x7.
_base_ = 'mmpretrain::_base_/models/resnet18.py'

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
        num_classes=1000,
        in_channels=512,
        students=(1, 2, 3),
        topk=(1, 5),
        loss=dict(
            type='TESKDLoss',
            ce_weight=0.8,
            kd_weight=0.2,
            fea_weight=1e-7,
            temperature=4.0)))
