# A diagnostic beside the CPU protocol (docs/experiments.md): TESKD with the
# loss weights of the paper's ImageNet recipe (CE 0.8, KD 0.2) instead of
# its CIFAR ones (0.2, 0.8); everything else as the protocol's TESKD run.
_base_ = './teskd_resnet18-w16_cifar10jpg-1k.py'

model = dict(head=dict(loss=dict(ce_weight=0.8, kd_weight=0.2)))
