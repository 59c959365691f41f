"""MultiBranchClsHead and the whole ResNet-18 TESKD classifier."""
import pytest
import torch
from mmengine.config import Config

from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

from teskd_mm.models.heads import BranchOutputs, MultiBranchClsHead
from teskd_mm.models.necks import MFMNeck

from conftest import ROOT, n_params

TESKD_CFG = f'{ROOT}/configs/teskd/resnet18_cifar100.py'
BASELINE_CFG = f'{ROOT}/configs/baseline/resnet18_cifar100.py'


@pytest.fixture(scope='module')
def teskd_model():
    torch.manual_seed(0)
    return MODELS.build(Config.fromfile(TESKD_CFG).model)


def test_exact_parameter_counts(teskd_model):
    # The released network, ResNet_CIFAR depth 18 and 100 classes.
    assert n_params(teskd_model) == 37_050_832
    teacher = n_params(teskd_model.backbone) + n_params(teskd_model.head.fc)
    assert teacher == 11_220_132
    baseline = MODELS.build(Config.fromfile(BASELINE_CFG).model)
    assert n_params(baseline) == teacher
    branches = teskd_model.head.branches
    assert n_params(branches['3']) - n_params(branches['3'].fc) == 1_313_792
    assert n_params(branches['2']) - n_params(branches['2'].fc) == 4_459_520
    assert n_params(branches['1']) - n_params(branches['1'].fc) == 17_042_432
    assert all(n_params(b.fc) == 51_300 for b in branches.values())
    assert [b.kernel for b in branches.values()] == [8, 4, 2]


def samples(n, num_classes=100):
    return [
        DataSample().set_gt_label(i % num_classes) for i in range(n)
    ]


def test_train_and_eval_outputs(teskd_model):
    x = torch.randn(2, 3, 32, 32)
    teskd_model.train()
    losses = teskd_model(x, samples(2), mode='loss')
    assert len(losses) == 10 and all('loss' in k for k in losses)
    feats = teskd_model.extract_feat(x)
    outs = teskd_model.head(feats)
    assert isinstance(outs, BranchOutputs)
    assert [tuple(s.shape) for s in outs.student_logits] == [(2, 100)] * 3

    teskd_model.eval()
    with torch.no_grad():
        logits = teskd_model(x, mode='tensor')
        feats = teskd_model.extract_feat(x)
        pre = teskd_model.head.pre_logits(feats)
        preds = teskd_model(x, samples(2), mode='predict')
    assert logits.shape == (2, 100)
    assert pre.shape == (2, 512)
    assert torch.allclose(logits, teskd_model.head.fc(pre))
    # predict gives the teacher's scores; the students ride along.
    assert torch.allclose(preds[0].pred_score, logits.softmax(1)[0])
    assert preds[0].student_scores.shape == (3, 100)
    assert preds[0].student_ids == (1, 2, 3)


def test_predict_without_students():
    head = MultiBranchClsHead(10, 64, eval_students=False)
    neck = MFMNeck((8, 16, 32, 64))
    x = tuple(torch.randn(2, c, 16 // 2**i, 16 // 2**i)
              for i, c in enumerate((8, 16, 32, 64)))
    head.eval()
    preds = head.predict(neck(x))
    assert 'student_scores' not in preds[0]


def test_soft_targets_are_used_when_present(teskd_model):
    teskd_model.train()
    x = torch.randn(2, 3, 32, 32)
    torch.manual_seed(1)
    hard = teskd_model(x, samples(2), mode='loss')
    soft_samples = samples(2)
    for s in soft_samples:
        s.set_gt_score(torch.full((100, ), 0.01))
    torch.manual_seed(1)
    soft = teskd_model(x, soft_samples, mode='loss')
    assert not torch.allclose(hard['loss_ce_teacher'],
                              soft['loss_ce_teacher'])


def test_head_refuses_mismatched_neck_and_kernels():
    neck = MFMNeck((8, 16, 32, 64), students=(2, 3))
    x = tuple(torch.randn(2, c, 16 // 2**i, 16 // 2**i)
              for i, c in enumerate((8, 16, 32, 64)))
    head = MultiBranchClsHead(10, 64)
    with pytest.raises(ValueError, match=r'neck feeds students \(2, 3\) but '
                       r'the head has students=\(1, 2, 3\)'):
        head.loss(neck(x), samples(2, 10))
    head = MultiBranchClsHead(10, 64, students=(2, 3), branch_kernels=(4, 4))
    with pytest.raises(ValueError, match=r'Student 3.*kernel must be 2, '
                       r'but it is 4'):
        head.loss(neck(x), samples(2, 10))
    with pytest.raises(ValueError, match='last stage has 64 channels but '
                       'MultiBranchClsHead in_channels=32; set the '
                       "head's in_channels=64"):
        MultiBranchClsHead(10, 32, branch_in_channels=64,
                           students=(2, 3)).loss(neck(x), samples(2, 10))
    with pytest.raises(TypeError, match='takes the output of MFMNeck'):
        head.loss(x, samples(2, 10))


def test_head_argument_errors():
    with pytest.raises(ValueError, match='num_classes=0 must be a positive'):
        MultiBranchClsHead(0, 64)
    with pytest.raises(ValueError, match=r'students=\(0,\) is not'):
        MultiBranchClsHead(10, 64, students=(0, ))
    with pytest.raises(ValueError, match='one kernel per student'):
        MultiBranchClsHead(10, 64, branch_kernels=(8, 4))
