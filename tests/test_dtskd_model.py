"""DTSKDNeck and DTSKDHead: sizes, fusion order, deployability, errors."""
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.logging import MessageHub

from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

from teskd_mm.apis.deploy import stock_model_cfg
from teskd_mm.models.heads import DTSKDHead
from teskd_mm.models.necks import DTSKDNeck, MFMNeck

from conftest import ROOT, n_params

DTSKD_CFG = f'{ROOT}/configs/dtskd/resnet18_cifar100.py'


@pytest.fixture(scope='module')
def dtskd_model():
    torch.manual_seed(0)
    return MODELS.build(Config.fromfile(DTSKD_CFG).model)


def test_exact_parameter_counts(dtskd_model):
    # The released code, DTSKD with ResNet_CIFAR depth 18 and 100 classes.
    assert n_params(dtskd_model) == 13_971_920
    teacher = n_params(dtskd_model.backbone) + n_params(dtskd_model.head.fc)
    assert teacher == 11_220_132
    stock = MODELS.build(stock_model_cfg(Config.fromfile(DTSKD_CFG).model))
    assert n_params(stock) == teacher
    neck = dtskd_model.neck
    assert n_params(neck.lateral_top) == 0
    assert [n_params(neck.laterals[k]) for k in '123'] == \
        [33_792, 66_560, 132_096]
    assert all(n_params(neck.upsamples[k]) == 263_168 for k in '123')
    assert all(n_params(neck.fuses[k]) == 525_312 for k in '123')
    branches = dtskd_model.head.branches.values()
    assert all(n_params(b) == 51_300 for b in branches)


def test_fusion_on_pooled_vectors_in_mfm_order():
    torch.manual_seed(0)
    neck = DTSKDNeck(in_channels=(4, 8, 16, 32)).eval()
    stages = [torch.randn(3, c, s, s) for c, s in
              ((4, 16), (8, 8), (16, 4), (32, 2))]
    with torch.no_grad():
        out = neck(stages)

        def lateral(b):
            # Pool first, then the 1x1 conv-BN-ReLU.
            conv = neck.laterals[str(b)][1]
            return conv(F.adaptive_avg_pool2d(stages[b - 1], 1))

        s = stages[3].mean(dim=(2, 3), keepdim=True)
        expected = {}
        for b in (3, 2, 1):
            u = neck.upsamples[str(b)](s)
            s = neck.fuses[str(b)](torch.cat([u + lateral(b), u], dim=1))
            expected[b] = s
    assert out.student_ids == (1, 2, 3)
    assert out.teacher is stages[3]
    for b, got in zip((1, 2, 3), out.students):
        assert got.shape == (3, 32, 1, 1)
        torch.testing.assert_close(got, expected[b])


def test_train_outputs_and_teacher_only_eval(dtskd_model):
    # What the Runner's RuntimeInfoHook records before a training epoch.
    hub = MessageHub.get_instance(f'test_dtskd_model_{id(dtskd_model)}')
    hub.update_info('epoch', 0)
    hub.update_info('max_epochs', 300)
    x = torch.randn(2, 3, 32, 32)
    samples = [DataSample(metainfo=dict(sample_idx=i)).set_gt_label(i)
               for i in range(2)]
    dtskd_model.train()
    losses = dtskd_model(x, samples, mode='loss')
    assert sorted(losses) == sorted(
        ['loss_hist_teacher'] + [f'loss_{t}_student{b}'
                                 for t in ('hist', 'kd') for b in (1, 2, 3)])
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())

    dtskd_model.eval()
    with torch.no_grad():
        logits = dtskd_model(x, mode='tensor')
        feat = dtskd_model.backbone(x)[-1].mean(dim=(2, 3))
        preds = dtskd_model(x, [DataSample() for _ in range(2)],
                            mode='predict')
    # The eval forward is the teacher alone: backbone, pool, fc.
    torch.testing.assert_close(logits, dtskd_model.head.fc(feat))
    assert preds[0].student_scores.shape == (3, 100)
    torch.testing.assert_close(preds[0].student_scores.sum(dim=1),
                               torch.ones(3))


def test_neck_refuses_a_width_other_than_the_last_stage():
    with pytest.raises(ValueError, match=r'out_channels=256 must equal the '
                       r'last stage.*\(512\).*out_channels=512'):
        DTSKDNeck(in_channels=(64, 128, 256, 512), out_channels=256)


def test_neck_explains_batch_of_one_in_training():
    neck = DTSKDNeck(in_channels=(4, 8, 16, 32)).train()
    stages = [torch.randn(1, c, 2, 2) for c in (4, 8, 16, 32)]
    with pytest.raises(ValueError, match='at least 2 samples per batch'):
        neck(stages)
    neck.eval()
    assert neck(stages).students[0].shape == (1, 32, 1, 1)


def test_head_refuses_unpooled_maps_of_the_tesk_neck():
    stages = [torch.randn(2, c, s, s) for c, s in
              ((4, 16), (8, 8), (16, 4), (32, 2))]
    feats = MFMNeck(in_channels=(4, 8, 16, 32))(stages)
    head = DTSKDHead(num_classes=5, in_channels=32)
    with pytest.raises(ValueError, match=r"student 1's map is \(16, 16\).*"
                       r"DTSKDNeck"):
        head(feats)


def test_head_explains_missing_sample_idx():
    neck = DTSKDNeck(in_channels=(4, 8, 16, 32))
    head = DTSKDHead(num_classes=5, in_channels=32)
    stages = [torch.randn(2, c, 2, 2) for c in (4, 8, 16, 32)]
    samples = [DataSample().set_gt_label(0) for _ in range(2)]
    with pytest.raises(KeyError, match=r"no 'sample_idx'.*PackInputs"):
        head.loss(neck(stages), samples)
