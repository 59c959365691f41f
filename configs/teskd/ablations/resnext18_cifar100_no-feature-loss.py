# Table 1, "Ours w/o F": TESKD without the feature distillation term.
_base_ = '../resnext18_cifar100.py'

model = dict(head=dict(loss=dict(fea_weight=0.0)))
