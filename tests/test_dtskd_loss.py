"""DTSKDLoss against the released code's formula, and its a_t schedules."""
import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from mmengine.logging import MessageHub

from teskd_mm.models.heads import BranchOutputs
from teskd_mm.models.losses import DTSKDLoss, historical_alpha

_hubs = itertools.count()


def runner_epoch(epoch, max_epochs=300):
    """Record the epoch as the Runner's RuntimeInfoHook does."""
    hub = MessageHub.get_instance(f'test_dtskd_loss_{next(_hubs)}')
    hub.update_info('epoch', epoch)
    hub.update_info('max_epochs', max_epochs)
    return hub


def fixed_outputs(n=5, c=7, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    heads = [(3 * torch.randn(n, c, generator=g)).requires_grad_(
        requires_grad) for _ in range(4)]
    return BranchOutputs(
        teacher_logits=heads[0],
        teacher_feat=torch.zeros(n, 2),
        student_logits=tuple(heads[1:]),
        student_feats=(torch.zeros(n, 2), ) * 3,
        student_ids=(1, 2, 3))


def test_alpha_schedules_follow_the_reference():
    for e in (0, 1, 150, 299):
        cos = 0.0 + (0.9 - 0.0) * (math.cos(math.pi * e / 300) + 1) / 2
        assert historical_alpha(e, 300, 'cos') == pytest.approx(cos)
        assert historical_alpha(e, 300, 'linear') == \
            pytest.approx(1 - 0.8 * (e + 1) / 300)
    assert historical_alpha(0, 300, 'cos') == pytest.approx(0.9)
    assert historical_alpha(150, 300, 'cos') == pytest.approx(0.45)
    with pytest.raises(ValueError, match=r"decay='step' is not one of"):
        historical_alpha(0, 300, 'step')
    with pytest.raises(ValueError, match=r'Epoch 300 lies outside.*'
                       r'num_epochs=300'):
        historical_alpha(300, 300)


def independent_loss(outs, labels, memory, written, alpha, T=4.0):
    """The released code: 0.2 [3 H(z_T) + sum H(z_b)] + 0.8 sum KL_T(z_b, z_T)."""
    heads = [outs.teacher_logits, *outs.student_logits]
    onehot = F.one_hot(labels, heads[0].size(1)).float()
    total = 0.0
    for h, (z, w) in enumerate(zip(heads, (3.0, 1.0, 1.0, 1.0))):
        target = torch.stack([
            alpha * onehot[i] + (1 - alpha) * memory[i, h]
            if written[i] else onehot[i] for i in range(len(labels))
        ])
        log_q = torch.log(torch.exp(z) / torch.exp(z).sum(1, keepdim=True))
        total = total + 0.2 * w * (-(target * log_q).sum(1)).mean()
    p_t = F.softmax(outs.teacher_logits / T, dim=1) + 1e-7
    for z in outs.student_logits:
        total = total + 0.8 * T * T * F.kl_div(
            F.log_softmax(z / T, dim=1), p_t, reduction='batchmean')
    return total


def test_loss_equals_an_independent_computation():
    n, c = 5, 7
    outs = fixed_outputs(n, c)
    labels = torch.tensor([0, 3, 6, 2, 3])
    idx = torch.tensor([10, 4, 7, 0, 12])
    loss = DTSKDLoss().eval()  # eval: read the memory, do not write
    g = torch.Generator().manual_seed(1)
    history = F.softmax(torch.randn(n, 4, c, generator=g), dim=2)
    # Rows 10, 7 and 12 were seen in the previous epoch; 4 and 0 were not.
    seen = torch.tensor([True, False, True, False, True])
    loss.memory.write(idx[seen], history[seen])
    loss.memory.write(torch.tensor([13]), history[:1])  # another sample

    runner_epoch(37)
    alpha = historical_alpha(37, 300)
    terms = loss(outs, labels, sample_idx=idx)
    assert sorted(terms) == sorted(
        ['loss_hist_teacher', 'loss_hist_student1', 'loss_hist_student2',
         'loss_hist_student3', 'loss_kd_student1', 'loss_kd_student2',
         'loss_kd_student3'])
    expected = independent_loss(outs, labels, history, seen, alpha)
    torch.testing.assert_close(sum(terms.values()), expected)
    # The historical term differs from plain cross-entropy here.
    ce = 0.2 * 3.0 * F.cross_entropy(outs.teacher_logits, labels)
    assert abs(terms['loss_hist_teacher'] - ce) > 1e-3


def test_at_alpha_one_the_historical_term_is_cross_entropy():
    outs = fixed_outputs()
    labels = torch.tensor([1, 1, 4, 0, 6])
    idx = torch.arange(5)
    loss = DTSKDLoss(cos_max=1.0, kd_weight=0.0).eval()
    loss.memory.write(idx, F.softmax(torch.randn(5, 4, 7), dim=2))
    runner_epoch(0)  # a_0 = cos_max = 1
    terms = loss(outs, labels, sample_idx=idx)
    assert set(terms) == {'loss_hist_teacher', 'loss_hist_student1',
                          'loss_hist_student2', 'loss_hist_student3'}
    torch.testing.assert_close(
        terms['loss_hist_teacher'],
        0.2 * 3.0 * F.cross_entropy(outs.teacher_logits, labels))
    for b, z in zip((1, 2, 3), outs.student_logits):
        torch.testing.assert_close(terms[f'loss_hist_student{b}'],
                                   0.2 * F.cross_entropy(z, labels))


def test_training_steps_write_every_heads_softmax():
    loss = DTSKDLoss(decay='linear').train()
    labels = torch.tensor([2, 0, 5, 1, 3])
    runner_epoch(0, max_epochs=10)
    first = loss(fixed_outputs(seed=0), labels, sample_idx=torch.arange(5))
    # The first step has only the labels: plain cross-entropy.
    outs0 = fixed_outputs(seed=0)
    torch.testing.assert_close(
        first['loss_hist_teacher'],
        0.2 * 3.0 * F.cross_entropy(outs0.teacher_logits, labels))
    rows, written = loss.memory.read(torch.arange(5))
    assert written.all() and loss.memory.num_rows == 5
    for h, z in enumerate([outs0.teacher_logits, *outs0.student_logits]):
        torch.testing.assert_close(rows[:, h], F.softmax(z, dim=1))

    # Next epoch, the same samples under other indices order, new logits.
    runner_epoch(1, max_epochs=10)
    order = torch.tensor([3, 1, 4, 0, 2])
    outs1 = fixed_outputs(seed=1)
    second = loss(outs1, labels[order], sample_idx=order)
    alpha = 1 - 0.8 * 2 / 10
    target = alpha * F.one_hot(labels[order], 7) + \
        (1 - alpha) * F.softmax(outs0.teacher_logits, dim=1)[order]
    expected = -(target * F.log_softmax(outs1.teacher_logits, 1)).sum(1)
    torch.testing.assert_close(second['loss_hist_teacher'],
                               0.2 * 3.0 * expected.mean())
    # and the memory now holds the second step's predictions.
    rows, _ = loss.memory.read(order)
    torch.testing.assert_close(rows[:, 0],
                               F.softmax(outs1.teacher_logits, dim=1))


def test_structural_teacher_is_not_detached_unless_asked():
    runner_epoch(3)
    labels = torch.tensor([0, 1, 2, 3, 4])
    for detach in (False, True):
        outs = fixed_outputs(requires_grad=True)
        terms = DTSKDLoss(hist_weight=0.0, teacher_detach=detach).eval()(
            outs, labels, sample_idx=torch.arange(5))
        sum(terms.values()).backward()
        reached = outs.teacher_logits.grad is not None and \
            outs.teacher_logits.grad.abs().sum() > 0
        assert reached is not detach


def test_soft_labels_replace_the_one_hot():
    runner_epoch(0)
    outs = fixed_outputs()
    soft = F.softmax(torch.randn(5, 7), dim=1)
    terms = DTSKDLoss(kd_weight=0.0).eval()(
        outs, soft, sample_idx=torch.arange(5))
    expected = -(soft * F.log_softmax(outs.teacher_logits, 1)).sum(1).mean()
    torch.testing.assert_close(terms['loss_hist_teacher'], 0.6 * expected)


def test_clear_errors():
    outs = fixed_outputs()
    labels = torch.zeros(5, dtype=torch.long)
    with pytest.raises(ValueError, match='needs sample_idx'):
        DTSKDLoss()(outs, labels)
    with pytest.raises(ValueError, match=r'student_weights=\(1.0, 1.0\) must '
                       r'give one weight per student.*3'):
        DTSKDLoss(student_weights=(1.0, 1.0))(outs, labels,
                                              sample_idx=torch.arange(5))
    other = DTSKDLoss().eval()
    other.memory.write(torch.arange(5), torch.full((5, 4, 9), 1 / 9))
    runner_epoch(1)
    with pytest.raises(ValueError, match=r'holds \(4, 9\).*has \(4, 7\)'):
        other(outs, labels, sample_idx=torch.arange(5))
    with pytest.raises(ValueError, match=r"decay='exp' is not one of"):
        DTSKDLoss(decay='exp')
    with pytest.raises(ValueError, match=r'cos_max=1.5 must lie in \[0, 1\]'):
        DTSKDLoss(cos_max=1.5)
    MessageHub.get_instance(f'test_dtskd_loss_{next(_hubs)}')  # no epoch
    loss = DTSKDLoss().train()
    # Without history a_t does not matter: a first step needs no epoch.
    loss(outs, labels, sample_idx=torch.arange(5))
    with pytest.raises(RuntimeError, match=r"found epoch=None.*"
                       r"update_info\('epoch', e\)"):
        loss(outs, labels, sample_idx=torch.arange(5))
