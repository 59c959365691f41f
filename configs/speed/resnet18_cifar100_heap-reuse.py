# TESKD ResNet-18 on CIFAR-100 with HeapReuseHook: on CPUs, malloc keeps
# freed activation memory for the next step instead of mapping it afresh.
# Faster training steps for more resident memory (README, Performance).
_base_ = '../teskd/resnet18_cifar100.py'

custom_hooks = [
    dict(type='EpochSeedHook'),
    dict(type='NonFiniteLossHook'),
    dict(type='SyncBuffersHook'),
    dict(type='HeapReuseHook', mmap_threshold_mb=1024, trim_threshold_mb=1024),
]
