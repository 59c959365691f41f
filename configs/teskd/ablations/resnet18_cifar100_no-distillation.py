# Table 4, "w/o Knowledge Distillation": the whole multi-branch network
# trained "without any distillation terms", i.e. with neither the KL nor the
# feature term; cross-entropy on the teacher and every student remains. Its
# weight is 1: the paper's loss weights satisfy alpha1 + alpha2 = 1 (Eq. 6),
# and keeping alpha1 = 0.2 alone would scale the whole loss by 0.2, which
# under SGD is the same network at a fifth of the learning rate and five
# times the weight decay.
_base_ = '../resnet18_cifar100.py'

model = dict(head=dict(loss=dict(ce_weight=1.0, kd_weight=0.0,
                                 fea_weight=0.0)))
