"""The TESKD objective: CE, temperature KD and feature distillation."""
from typing import Dict, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.dist import get_world_size

from mmpretrain.registry import MODELS


def cross_entropy_any(logits: torch.Tensor,
                      target: torch.Tensor) -> torch.Tensor:
    """Batch-mean cross-entropy for hard labels ``(N,)`` or soft ``(N, C)``."""
    if target.dim() == 1:
        return F.cross_entropy(logits, target)
    return -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def kd_kl_div(student_logits: torch.Tensor,
              teacher_logits: torch.Tensor,
              temperature: float,
              eps: float = 0.0) -> torch.Tensor:
    """``T^2 * KL(softmax(t/T) || softmax(s/T))``, batch-mean.

    Args:
        student_logits (Tensor): ``(N, C)``.
        teacher_logits (Tensor): ``(N, C)``; gradients flow into it unless
            the caller detaches it.
        temperature (float): The temperature ``T``.
        eps (float): Added to the teacher probabilities, as the released
            TESKD code does (1e-7). Defaults to 0.
    """
    # Softmax in fp32 keeps T-scaled logits from overflowing under fp16.
    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=1)
    p_t = F.softmax(teacher_logits.float() / temperature, dim=1) + eps
    kl = (p_t * (p_t.log() - log_p_s)).sum() / student_logits.size(0)
    return kl * temperature**2


def check_weights(loss: str, weights: Dict[str, float],
                  groups: Sequence[Sequence[str]] = ()) -> None:
    """Loss weights must be >= 0 (a negative one maximises its term) and
    leave at least one term.

    Args:
        loss (str): The loss's name, for messages.
        weights (dict): Every weight by its argument name.
        groups (Sequence[Sequence[str]]): Weights that give a term only
            together (all non-zero); by default each weight gives its own.
    """
    for name, value in weights.items():
        if value < 0:
            raise ValueError(
                f'{loss} {name}={value} is negative: that term would be '
                'maximised instead of minimised; weights must be >= 0 '
                '(0 switches a term off).')
    groups = groups or [[name] for name in weights]
    if not any(all(weights[name] for name in group) for group in groups):
        raise ValueError(
            f'{loss} weights {weights} leave no loss term to train the '
            'network; give at least one term a positive weight.')


def kd_terms(outs, weight: float, temperature: float, eps: float,
             teacher_detach: bool) -> Dict[str, torch.Tensor]:
    """The structural teacher: ``loss_kd_student{b}`` for every student.

    Args:
        outs (BranchOutputs): The head's outputs for all branches.
        weight (float): Weight of each term; 0 gives no terms.
        temperature (float): The temperature ``T``.
        eps (float): Added to the teacher's probabilities.
        teacher_detach (bool): Stop the gradient at the teacher's logits.
    """
    if not weight:
        return {}
    teacher = outs.teacher_logits
    if teacher_detach:
        teacher = teacher.detach()
    return {
        f'loss_kd_student{b}':
        weight * kd_kl_div(logits, teacher, temperature, eps)
        for b, logits in zip(outs.student_ids, outs.student_logits)
    }


@MODELS.register_module()
class TESKDLoss(nn.Module):
    """Loss of Teacher Evolution via Self-Knowledge Distillation.

    With teacher logits ``z_T``, pooled teacher feature ``f_T``, and per
    student ``b`` logits ``z_b`` and pooled feature ``F_b``::

        L = ce_weight  * (CE(z_T, y) + sum_b CE(z_b, y))
          + kd_weight  * sum_b T^2 KL(softmax(z_T/T) || softmax(z_b/T))
          + fea_weight * sum_b ||F_b - sg(f_T)||^2    (summed, not averaged)

    The defaults are the released CIFAR recipe. As released, the KL gradient
    also reaches the teacher's logits (``teacher_detach=False``), which is
    part of "student helping teacher". Each term comes out as its own
    weighted entry: ``loss_ce_teacher``, ``loss_ce_student{b}``,
    ``loss_kd_student{b}``, ``loss_fea_student{b}``; their sum is ``L``.
    A term whose weight is 0 is not computed. Under DistributedDataParallel
    the feature terms are multiplied by the number of processes, so that
    training on N processes follows the gradient of the single-process loss
    on the same global batch (the other terms are batch means already).

    Args:
        ce_weight (float): Weight ``alpha_1`` of the cross-entropy terms.
            Defaults to 0.2 (the paper uses 0.8 on ImageNet).
        kd_weight (float): Weight ``alpha_2`` of the KL terms. Defaults to
            0.8.
        fea_weight (float): Weight ``beta`` of the feature terms. Defaults to
            1e-7.
        temperature (float): KD temperature. Defaults to 4.
        teacher_detach (bool): Stop the KL gradient at the teacher's logits.
            Defaults to False (the released behaviour).
        kl_eps (float): Added to the teacher's probabilities inside the KL,
            as released. Defaults to 1e-7.
    """

    def __init__(self,
                 ce_weight: float = 0.2,
                 kd_weight: float = 0.8,
                 fea_weight: float = 1e-7,
                 temperature: float = 4.0,
                 teacher_detach: bool = False,
                 kl_eps: float = 1e-7) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f'temperature={temperature} must be positive.')
        check_weights('TESKDLoss', dict(ce_weight=ce_weight,
                                        kd_weight=kd_weight,
                                        fea_weight=fea_weight))
        self.ce_weight = ce_weight
        self.kd_weight = kd_weight
        self.fea_weight = fea_weight
        self.temperature = temperature
        self.teacher_detach = teacher_detach
        self.kl_eps = kl_eps

    def forward(self, outs, target: torch.Tensor,
                **kwargs) -> Dict[str, torch.Tensor]:
        """Compute every term.

        Args:
            outs (BranchOutputs): The head's outputs for all branches.
            target (Tensor): Labels ``(N,)`` or soft targets ``(N, C)``.

        Returns:
            dict[str, Tensor]: The weighted terms, named per term and branch.
        """
        losses = {}
        if self.ce_weight:
            losses['loss_ce_teacher'] = self.ce_weight * cross_entropy_any(
                outs.teacher_logits, target)
            for b, logits in zip(outs.student_ids, outs.student_logits):
                losses[f'loss_ce_student{b}'] = \
                    self.ce_weight * cross_entropy_any(logits, target)
        losses.update(
            kd_terms(outs, self.kd_weight, self.temperature, self.kl_eps,
                     self.teacher_detach))
        if self.fea_weight:
            # A sum over the batch: under DDP, which averages gradients over
            # the processes, scale by their number so that the gradient is
            # that of the sum over the global batch. In fp32: the sum of
            # squares is about 25,000 per 64 images at initialisation and
            # grows, past fp16's 65,504.
            scale = self.fea_weight * get_world_size()
            teacher_feat = outs.teacher_feat.detach().float()
            for b, feat in zip(outs.student_ids, outs.student_feats):
                losses[f'loss_fea_student{b}'] = \
                    scale * (feat.float() - teacher_feat).pow(2).sum()
        return losses
