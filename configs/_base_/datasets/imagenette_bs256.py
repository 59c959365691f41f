# Imagenette (10 ImageNet classes) in class folders (train/<wnid>/*.JPEG,
# val/<wnid>/*.JPEG), read by mmpretrain's CustomDataset with ImageNet's
# pipelines and statistics; 256 images per step on one GPU (with N GPUs,
# divide by N). Point it elsewhere with IMAGENETTE_ROOT=/path/to/folders.
_base_ = 'mmpretrain::_base_/datasets/imagenet_bs32.py'

data_root = '{{$IMAGENETTE_ROOT:data/imagenette2-224}}'

data_preprocessor = dict(num_classes=10)

train_dataloader = dict(
    batch_size=256,
    dataset=dict(
        _delete_=True,
        type='CustomDataset',
        data_root=data_root,
        data_prefix='train',
        pipeline={{_base_.train_pipeline}}))
val_dataloader = dict(
    batch_size=64,
    dataset=dict(
        _delete_=True,
        type='CustomDataset',
        data_root=data_root,
        data_prefix='val',
        pipeline={{_base_.test_pipeline}}))
test_dataloader = val_dataloader
