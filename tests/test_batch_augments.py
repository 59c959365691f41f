"""TESKD under mmpretrain's batch augments (Mixup, CutMix).

With ``model.train_cfg=dict(augments=[...])`` the data preprocessor turns
the labels into one-hot ``gt_score``s and mixes them with the images, so
the soft targets reach :class:`TESKDLoss` through
``MultiBranchClsHead.loss``. The cross-entropy of the teacher and of every
student is then taken against the soft targets; the KD and feature terms do
not involve the targets at all and must come out as with hard labels.
"""
import json
import os
import os.path as osp

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mmpretrain.models.utils import ClsDataPreprocessor
from mmpretrain.structures import DataSample

from teskd_mm.models.heads.multi_branch_cls_head import MultiBranchClsHead
from teskd_mm.models.necks.mfm_neck import MFMNeck

from conftest import tool_in_process, write_tiny_config

NUM_CLASSES, BATCH = 10, 6
CE, KD, FEA, T, EPS = 0.2, 0.8, 1e-7, 4.0, 1e-7


# -- training through tools/train.py ------------------------------------------
@pytest.mark.parametrize('augment', [
    "dict(type='Mixup', alpha=0.8)",
    "dict(type='CutMix', alpha=1.0)",
])
def test_teskd_trains_with_the_batch_augment(tmp_path, cifar10_mini,
                                             augment):
    cfg = write_tiny_config(
        str(tmp_path / 'aug.py'), cifar10_mini, f"""
        model = dict(train_cfg=dict(augments=[{augment}]))
        train_dataloader = dict(dataset=dict(indices=8))
        train_cfg = dict(max_epochs=1)
        """)
    work = str(tmp_path / 'work')
    tool_in_process('train.py', cfg, '--work-dir', work, '--no-validate')
    scalars = [
        osp.join(r, f) for r, _, fs in os.walk(work) for f in fs
        if f == 'scalars.json'
    ]
    records = [json.loads(line) for line in open(scalars[0])]
    steps = [r for r in records if 'loss' in r]
    assert len(steps) == 2
    for step in steps:
        terms = {k: v for k, v in step.items() if k.startswith('loss')}
        assert {f'loss_{t}_student{b}'
                for t in ('ce', 'kd', 'fea') for b in (1, 2, 3)} | \
            {'loss', 'loss_ce_teacher'} == set(terms)
        assert all(np.isfinite(v) for v in terms.values()), terms
        # A mixed target's CE is at least its entropy, well above 0.
        assert step['loss_ce_teacher'] > 0


# -- the loss on fixed tensors ------------------------------------------------
@pytest.fixture(scope='module')
def head_and_feats():
    """A small neck and head (stages of 8..64 channels at 16..2 px) and the
    neck's output on fixed stage maps."""
    torch.manual_seed(0)
    neck = MFMNeck(in_channels=(8, 16, 32, 64), out_channels=64)
    head = MultiBranchClsHead(
        num_classes=NUM_CLASSES,
        in_channels=64,
        loss=dict(type='TESKDLoss', ce_weight=CE, kd_weight=KD,
                  fea_weight=FEA, temperature=T, kl_eps=EPS))
    neck.init_weights()
    head.init_weights()
    with torch.no_grad():
        # Logits of a trained network's spread, rather than those of the
        # Normal(0.01) init, so that the KL's direction and temperature
        # matter (for nearby distributions KL is symmetric to second order).
        for m in head.modules():
            if isinstance(m, torch.nn.Linear):
                m.weight.normal_(0, 2)
    neck.train()
    head.train()
    stages = [
        torch.randn(BATCH, c, s, s)
        for c, s in zip((8, 16, 32, 64), (16, 8, 4, 2))
    ]
    with torch.no_grad():
        feats = neck(stages)
    return head, feats


def samples(labels=None, scores=None):
    out = []
    for i in range(BATCH):
        s = DataSample()
        if labels is not None:
            s.set_gt_label(int(labels[i]))
        if scores is not None:
            s.set_gt_score(scores[i])
        out.append(s)
    return out


def soft_ce(logits, target):
    return -(target * torch.log_softmax(logits, dim=1)).sum(1).mean()


def expected_losses(outs, target_ce):
    """Every term, computed here from the head's outputs; ``target_ce`` maps
    logits to the (unweighted) cross-entropy against the targets."""
    teacher = outs.teacher_logits.double()
    expected = {'loss_ce_teacher': CE * target_ce(teacher)}
    p_t = torch.softmax(teacher / T, dim=1) + EPS
    for b, logits, feat in zip(outs.student_ids, outs.student_logits,
                               outs.student_feats):
        logits = logits.double()
        expected[f'loss_ce_student{b}'] = CE * target_ce(logits)
        kl = (p_t * (p_t.log() - torch.log_softmax(logits / T, 1))).sum(1)
        expected[f'loss_kd_student{b}'] = KD * T**2 * kl.mean()
        expected[f'loss_fea_student{b}'] = FEA * (
            feat.double() - outs.teacher_feat.double()).pow(2).sum()
    return expected


def check(losses, expected):
    assert set(losses) == set(expected)
    for key, value in expected.items():
        # The package's KL sums fp32 differences of logs: some 1e-6
        # absolute rounding (times T^2), against float64 here.
        torch.testing.assert_close(
            losses[key].double(), value, rtol=1e-5, atol=1e-5,
            msg=lambda m, key=key: f'{key}: {m}')


def test_soft_targets_give_soft_ce_and_the_same_kd_and_feature_terms(
        head_and_feats):
    head, feats = head_and_feats
    g = torch.Generator().manual_seed(1)
    scores = torch.softmax(3 * torch.randn(BATCH, NUM_CLASSES, generator=g),
                           dim=1)
    labels = torch.randint(NUM_CLASSES, (BATCH, ), generator=g)
    outs = head.forward_all(feats)
    assert all(v > 0.5 for k, v in expected_losses(
        outs, lambda z: z.sum()).items() if 'kd' in k), 'KD terms too small'

    soft = head.loss(feats, samples(scores=scores))
    check(soft, expected_losses(outs, lambda z: soft_ce(z, scores.double())))

    hard = head.loss(feats, samples(labels=labels))
    check(hard, expected_losses(outs, lambda z: F.cross_entropy(z, labels)))
    for key in hard:
        if not key.startswith('loss_ce'):
            assert torch.equal(soft[key], hard[key]), key
    # One-hot scores are the hard labels.
    onehot = F.one_hot(labels, NUM_CLASSES).float()
    for key, value in head.loss(feats, samples(scores=onehot)).items():
        torch.testing.assert_close(value, hard[key], msg=key)


def test_gt_score_wins_over_gt_label(head_and_feats):
    """The data preprocessor keeps both; the mixed scores are the target."""
    head, feats = head_and_feats
    labels = torch.arange(BATCH) % NUM_CLASSES
    scores = torch.full((BATCH, NUM_CLASSES), 1 / NUM_CLASSES)
    both = head.loss(feats, samples(labels=labels, scores=scores))
    only_scores = head.loss(feats, samples(scores=scores))
    for key in both:
        assert torch.equal(both[key], only_scores[key]), key


def test_a_real_mixup_batch(head_and_feats):
    """mmpretrain's Mixup through its data preprocessor, as in training;
    CE is linear in the target, so against the mixed scores it is
    ``lam * CE(y) + (1 - lam) * CE(y[perm])`` with Mixup's own draw of
    ``lam`` and ``perm``, repeated here from the same seeds."""
    head, feats = head_and_feats
    preprocessor = ClsDataPreprocessor(
        num_classes=NUM_CLASSES,
        batch_augments=dict(augments=dict(type='Mixup', alpha=0.8)))
    labels = torch.tensor([0, 3, 3, 7, 9, 1])
    images = torch.randint(0, 256, (BATCH, 3, 8, 8), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(2))
    np.random.seed(3)
    torch.manual_seed(4)
    data = preprocessor(
        dict(inputs=images, data_samples=samples(labels=labels)),
        training=True)
    mixed = data['data_samples']
    # Mixup's draws: the choice among its augments (one, drawn all the
    # same), lam, the pairing.
    np.random.seed(3)
    torch.manual_seed(4)
    np.random.choice(1, p=None)
    lam = np.random.beta(0.8, 0.8)
    perm = torch.randperm(BATCH)
    assert 0 < lam < 1 and not torch.equal(perm, torch.arange(BATCH))
    assert all('gt_score' in s and 'gt_label' in s for s in mixed)
    assert (torch.stack([s.gt_score for s in mixed]).max(1).values < 1).any()
    torch.testing.assert_close(
        torch.stack([s.gt_score for s in mixed]),
        lam * F.one_hot(labels, NUM_CLASSES).float() +
        (1 - lam) * F.one_hot(labels[perm], NUM_CLASSES).float())
    torch.testing.assert_close(
        data['inputs'],
        lam * images.float() + (1 - lam) * images[perm].float())

    outs = head.forward_all(feats)
    losses = head.loss(feats, mixed)
    check(
        losses,
        expected_losses(
            outs, lambda z: lam * F.cross_entropy(z, labels) +
            (1 - lam) * F.cross_entropy(z, labels[perm])))
