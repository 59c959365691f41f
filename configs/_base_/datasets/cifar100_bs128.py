# mmpretrain's CIFAR-100 at 128 images per step, read by CheckedCIFAR100:
# the same data set, with one clear message naming the folder and file to
# put there when the data are missing and cannot be downloaded.
_base_ = 'mmpretrain::_base_/datasets/cifar100_bs16.py'

train_dataloader = dict(batch_size=128, dataset=dict(type='CheckedCIFAR100'))
val_dataloader = dict(batch_size=128, dataset=dict(type='CheckedCIFAR100'))
test_dataloader = val_dataloader
val_evaluator = dict(topk=(1, 5))
test_evaluator = val_evaluator
