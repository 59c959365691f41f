# Table 4, "w/o Knowledge Distillation": the whole multi-branch network
# trained "without any distillation terms", i.e. with neither the KL nor the
# feature term; cross-entropy on the teacher and every student remains.
_base_ = '../resnet18_cifar100.py'

model = dict(head=dict(loss=dict(kd_weight=0.0, fea_weight=0.0)))
