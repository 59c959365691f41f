"""TESKDLoss against an independent computation of the published formulas."""
import pytest
import torch
import torch.nn.functional as F

from teskd_mm.models.heads import BranchOutputs
from teskd_mm.models.losses import TESKDLoss


def make_outputs(n=6, c=10, d=16, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    t_logits = torch.randn(n, c, generator=g) * 3
    t_feat = torch.rand(n, d, generator=g)
    s_logits = [torch.randn(n, c, generator=g) * 2 for _ in range(3)]
    s_feats = [torch.rand(n, d, generator=g) for _ in range(3)]
    if requires_grad:
        for x in [t_logits, t_feat, *s_logits, *s_feats]:
            x.requires_grad_(True)
    outs = BranchOutputs(t_logits, t_feat, tuple(s_logits), tuple(s_feats),
                         (1, 2, 3))
    labels = torch.randint(0, c, (n, ), generator=g)
    return outs, labels


def reference_loss(outs, labels, alpha1=0.2, alpha2=0.8, beta=1e-7, T=4.0):
    """The released code's formulas, written with torch's own reductions."""
    ce = F.cross_entropy(outs.teacher_logits, labels)
    kd = 0
    fea = 0
    teacher_prob = F.softmax(outs.teacher_logits / T, dim=1) + 1e-7
    for logits, feat in zip(outs.student_logits, outs.student_feats):
        ce = ce + F.cross_entropy(logits, labels)
        kd = kd + F.kl_div(F.log_softmax(logits / T, dim=1), teacher_prob,
                           reduction='batchmean') * T * T
        fea = fea + F.mse_loss(
            feat, outs.teacher_feat.detach(), reduction='sum')
    return alpha1 * ce + alpha2 * kd + beta * fea


def test_loss_matches_reference():
    outs, labels = make_outputs()
    losses = TESKDLoss()(outs, labels)
    total = sum(losses.values())
    assert torch.allclose(total, reference_loss(outs, labels), atol=1e-6)


def test_loss_keys_are_distinct_and_named_per_branch():
    outs, labels = make_outputs()
    losses = TESKDLoss()(outs, labels)
    expected = {'loss_ce_teacher'} | {
        f'loss_{term}_student{b}'
        for term in ('ce', 'kd', 'fea') for b in (1, 2, 3)
    }
    assert set(losses) == expected
    assert all('loss' in k and k != 'loss' for k in losses)


@pytest.mark.parametrize('weights', [(0.8, 0.2, 0.0), (1.0, 0.0, 1e-3)])
def test_weights_and_temperature_are_used(weights):
    outs, labels = make_outputs(seed=3)
    a1, a2, b = weights
    loss = TESKDLoss(ce_weight=a1, kd_weight=a2, fea_weight=b,
                     temperature=2.0)(outs, labels)
    ref = reference_loss(outs, labels, a1, a2, b, T=2.0)
    assert torch.allclose(sum(loss.values()), ref, atol=1e-6)
    # A term whose weight is 0 is not computed at all.
    assert not any('fea' in k for k in loss) or b
    assert not any('kd' in k for k in loss) or a2


def test_feature_term_is_a_sum_not_a_mean():
    outs, labels = make_outputs(n=4, d=8)
    loss = TESKDLoss(ce_weight=0, kd_weight=0, fea_weight=1.0)(outs, labels)
    f1 = outs.student_feats[0]
    expected = ((f1 - outs.teacher_feat)**2).sum()
    assert torch.allclose(loss['loss_fea_student1'], expected)


@pytest.mark.parametrize('detach', [False, True])
def test_kl_gradient_reaches_teacher_only_when_not_detached(detach):
    outs, labels = make_outputs(requires_grad=True)
    loss = TESKDLoss(teacher_detach=detach)(outs, labels)
    kd = sum(v for k, v in loss.items() if 'kd' in k)
    grad, = torch.autograd.grad(kd, outs.teacher_logits, allow_unused=True)
    if detach:
        assert grad is None or grad.abs().max() == 0
    else:
        assert grad is not None and grad.abs().max() > 0
    # The feature term never pushes on the teacher's feature.
    fea = sum(v for k, v in loss.items() if 'fea' in k)
    grad, = torch.autograd.grad(fea, outs.teacher_feat, allow_unused=True)
    assert grad is None or grad.abs().max() == 0


def test_soft_targets_from_batch_augmentation():
    outs, labels = make_outputs()
    onehot = F.one_hot(labels, 10).float()
    hard = TESKDLoss()(outs, labels)
    soft = TESKDLoss()(outs, onehot)
    for key in hard:
        assert torch.allclose(hard[key], soft[key], atol=1e-6), key
    mixed = 0.7 * onehot + 0.3 * onehot.roll(1, dims=0)
    ce = TESKDLoss(kd_weight=0, fea_weight=0)(outs, mixed)['loss_ce_teacher']
    ref = -(mixed * F.log_softmax(outs.teacher_logits, 1)).sum(1).mean()
    assert torch.allclose(ce, 0.2 * ref, atol=1e-6)


def test_kl_in_half_precision_stays_finite():
    outs, labels = make_outputs()
    big = BranchOutputs(outs.teacher_logits.half() * 3000, outs.teacher_feat,
                        tuple(s.half() * 3000 for s in outs.student_logits),
                        outs.student_feats, outs.student_ids)
    loss = TESKDLoss(ce_weight=0, fea_weight=0)(big, labels)
    assert all(torch.isfinite(v) for v in loss.values())


def test_bad_temperature_is_refused():
    with pytest.raises(ValueError, match='temperature=0 must be positive'):
        TESKDLoss(temperature=0)
