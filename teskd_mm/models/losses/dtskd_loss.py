"""The DTSKD objective: a historical and a structural teacher."""
import math
from typing import Dict, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.logging import MessageHub

from mmpretrain.registry import MODELS
from ..utils.prediction_memory import PredictionMemory
from .teskd_loss import check_weights, cross_entropy_any, kd_terms

DECAYS = ('cos', 'linear')


def historical_alpha(epoch: int,
                     num_epochs: int,
                     decay: str = 'cos',
                     cos_max: float = 0.9,
                     cos_min: float = 0.0,
                     linear_decay: float = 0.8) -> float:
    """The weight ``a_t`` of the label in DTSKD's historical target.

    ``'cos'``: ``cos_min + (cos_max - cos_min) * (cos(pi * e / E) + 1) / 2``;
    ``'linear'``: ``1 - linear_decay * (e + 1) / E``, with ``e`` the 0-based
    epoch and ``E = num_epochs``.

    Args:
        epoch (int): The 0-based training epoch.
        num_epochs (int): ``E``, the length of the schedule.
        decay (str): ``'cos'`` or ``'linear'``.
        cos_max (float): ``a_t`` at the first epoch under ``'cos'``.
        cos_min (float): ``a_t`` approached at epoch ``E`` under ``'cos'``.
        linear_decay (float): How far ``a_t`` falls over ``E`` epochs under
            ``'linear'``.

    Returns:
        float: ``a_t``.
    """
    if decay not in DECAYS:
        raise ValueError(f'decay={decay!r} is not one of {DECAYS}.')
    if num_epochs is None or num_epochs <= 0:
        raise ValueError(f'num_epochs={num_epochs} must be a positive number '
                         'of epochs.')
    if not 0 <= epoch < num_epochs:
        raise ValueError(
            f'Epoch {epoch} lies outside the historical schedule of '
            f'num_epochs={num_epochs} (epochs 0 .. {num_epochs - 1}); set '
            'num_epochs to at least the number of training epochs.')
    if decay == 'cos':
        return cos_min + (cos_max - cos_min) * \
            (math.cos(math.pi * epoch / num_epochs) + 1) / 2
    return 1 - linear_decay * (epoch + 1) / num_epochs


@MODELS.register_module()
class DTSKDLoss(nn.Module):
    """Loss of Dual Teachers for Self-Knowledge Distillation.

    With teacher logits ``z_T`` and student logits ``z_b``::

        L = hist_weight * (teacher_weight * H(z_T) + sum_b w_b * H(z_b))
          + kd_weight   * sum_b T^2 KL(softmax(z_T/T) || softmax(z_b/T))

    The KL is the structural teacher, as in :class:`TESKDLoss` (not detached
    by default, as released). ``H`` is the historical teacher: the soft
    cross-entropy of each head against

        a_t * y + (1 - a_t) * memory[head, sample_idx]

    where ``y`` is the one-hot label (``gt_score`` with batch
    augmentations), ``memory`` holds the softmax (T = 1) each head gave the
    sample when it last saw it (the previous epoch), ``y`` itself before the
    first write, and ``a_t`` follows :func:`historical_alpha` over the
    Runner's epoch, read from mmengine's ``MessageHub`` (set before every
    training epoch; needed once a sample of the batch has history). In
    training mode every call writes the batch's
    predictions into the memory, after reading the old ones; see
    :class:`PredictionMemory` for its cost and checkpointing.

    Each term is its own weighted entry: ``loss_hist_teacher``,
    ``loss_hist_student{b}``, ``loss_kd_student{b}``; their sum is ``L``.
    The current ``a_t`` is logged as ``train/hist_alpha``.

    Args:
        hist_weight (float): Weight of the historical terms. Defaults to 0.2.
        kd_weight (float): Weight of the KL terms. Defaults to 0.8.
        teacher_weight (float): Weight of the teacher's historical term
            inside the bracket. Defaults to 3.0.
        student_weights (Sequence[float]): Weight of each student's
            historical term, in the order of the students. Defaults to
            ``(1.0, 1.0, 1.0)``.
        temperature (float): KD temperature. Defaults to 4.
        decay (str): Schedule of ``a_t``: ``'cos'`` (default) or
            ``'linear'``.
        cos_max (float): ``a_t`` at epoch 0 under ``'cos'``. Defaults to 0.9.
        cos_min (float): ``a_t`` at the end under ``'cos'``. Defaults to 0.
        linear_decay (float): Fall of ``a_t`` over the schedule under
            ``'linear'``. Defaults to 0.8.
        num_epochs (int, optional): ``E``, the length of the schedule.
            Defaults to None: the Runner's ``max_epochs``.
        teacher_detach (bool): Stop the KL gradient at the teacher's logits.
            Defaults to False (the released behaviour).
        kl_eps (float): Added to the teacher's probabilities inside the KL,
            as in TESKD. Defaults to 1e-7.
        num_samples (int, optional): Rows of the memory, the training set's
            size. Defaults to None (grows as needed).
        memory_dtype (str): Storage type of the memory, ``'float32'``
            (default), ``'float16'`` or ``'bfloat16'``.
    """

    def __init__(self,
                 hist_weight: float = 0.2,
                 kd_weight: float = 0.8,
                 teacher_weight: float = 3.0,
                 student_weights: Sequence[float] = (1.0, 1.0, 1.0),
                 temperature: float = 4.0,
                 decay: str = 'cos',
                 cos_max: float = 0.9,
                 cos_min: float = 0.0,
                 linear_decay: float = 0.8,
                 num_epochs: Optional[int] = None,
                 teacher_detach: bool = False,
                 kl_eps: float = 1e-7,
                 num_samples: Optional[int] = None,
                 memory_dtype: str = 'float32') -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f'temperature={temperature} must be positive.')
        if decay not in DECAYS:
            raise ValueError(f'DTSKDLoss decay={decay!r} is not one of '
                             f'{DECAYS}.')
        for name, value in (('cos_max', cos_max), ('cos_min', cos_min)):
            if not 0 <= value <= 1:
                raise ValueError(f'{name}={value} must lie in [0, 1].')
        student_weights = tuple(float(w) for w in student_weights)
        weights = dict(hist_weight=hist_weight, kd_weight=kd_weight,
                       teacher_weight=teacher_weight)
        weights.update({f'student_weights[{i}]': w
                        for i, w in enumerate(student_weights)})
        # A historical term needs hist_weight and its head's weight.
        check_weights('DTSKDLoss', weights, [['kd_weight']] + [
            ['hist_weight', name] for name in weights
            if name not in ('hist_weight', 'kd_weight')
        ])
        if num_epochs is not None and num_epochs <= 0:
            raise ValueError(f'num_epochs={num_epochs} must be positive, or '
                             'None for the Runner\'s max_epochs.')
        self.hist_weight = hist_weight
        self.kd_weight = kd_weight
        self.teacher_weight = teacher_weight
        self.student_weights = student_weights
        self.temperature = temperature
        self.decay = decay
        self.cos_max = cos_max
        self.cos_min = cos_min
        self.linear_decay = linear_decay
        self.num_epochs = num_epochs
        self.teacher_detach = teacher_detach
        self.kl_eps = kl_eps
        self.memory = PredictionMemory(num_samples, memory_dtype)

    def current_alpha(self, required: bool = True) -> Optional[float]:
        """``a_t`` at the epoch the Runner is in.

        Args:
            required (bool): Raise when no epoch is recorded; otherwise
                return None. Defaults to True.
        """
        hub = MessageHub.get_current_instance()
        epoch = hub.get_info('epoch')
        num_epochs = self.num_epochs or hub.get_info('max_epochs')
        if epoch is None or num_epochs is None:
            if not required:
                return None
            raise RuntimeError(
                'DTSKDLoss reads the training epoch (and, without '
                'num_epochs, max_epochs) from mmengine\'s MessageHub, where '
                'the Runner puts them, but found epoch='
                f'{epoch}, max_epochs={num_epochs}. Outside a Runner, call '
                'MessageHub.get_current_instance().update_info(\'epoch\', e) '
                '(and set num_epochs) before computing the loss.')
        alpha = historical_alpha(epoch, num_epochs, self.decay, self.cos_max,
                                 self.cos_min, self.linear_decay)
        if self.training:
            hub.update_scalar('train/hist_alpha', alpha)
        return alpha

    def historical_targets(self, onehot: torch.Tensor,
                           sample_idx: torch.Tensor,
                           num_heads: int) -> torch.Tensor:
        """The historical target of every head, ``(N, num_heads, C)``."""
        memory, written = self.memory.read(sample_idx.to(onehot.device))
        target = onehot.unsqueeze(1).expand(-1, num_heads, -1)
        # Without history the target is the label whatever a_t is, so a
        # first step needs no epoch (e.g. a check run outside the Runner).
        alpha = self.current_alpha(required=bool(written.any()))
        if not bool(written.any()):
            return target
        if memory.shape[1:] != target.shape[1:]:
            raise ValueError(
                f'The prediction memory holds {tuple(memory.shape[1:])} '
                '(heads, classes) per sample but the model has '
                f'{tuple(target.shape[1:])}; it was loaded from a '
                'checkpoint of another model.')
        mixed = alpha * target + (1 - alpha) * memory
        return torch.where(written[:, None, None], mixed, target)

    def forward(self,
                outs,
                target: torch.Tensor,
                sample_idx: Optional[torch.Tensor] = None,
                **kwargs) -> Dict[str, torch.Tensor]:
        """Compute every term; in training, update the memory.

        Args:
            outs (BranchOutputs): The head's outputs for all branches.
            target (Tensor): Labels ``(N,)`` or soft targets ``(N, C)``.
            sample_idx (Tensor): Each sample's index in the data set,
                ``(N,)``.

        Returns:
            dict[str, Tensor]: The weighted terms, named per term and branch.
        """
        if sample_idx is None:
            raise ValueError(
                'DTSKDLoss needs sample_idx, the index in the data set of '
                'each sample, to key its prediction memory; DTSKDHead passes '
                'it from the data samples\' metainfo.')
        if len(self.student_weights) != len(outs.student_ids):
            raise ValueError(
                f'student_weights={self.student_weights} must give one '
                f'weight per student, and there are {len(outs.student_ids)} '
                f'(levels {tuple(outs.student_ids)}).')
        teacher = outs.teacher_logits
        heads = (teacher, ) + tuple(outs.student_logits)
        sample_idx = torch.as_tensor(sample_idx).reshape(-1)
        if sample_idx.numel() != teacher.size(0):
            raise ValueError(
                f'Got {sample_idx.numel()} sample indices for a batch of '
                f'{teacher.size(0)}.')
        num_classes = teacher.size(1)
        if target.dim() == 1:
            onehot = F.one_hot(target, num_classes).float()
        else:
            onehot = target.float()

        losses = {}
        if self.hist_weight:
            hist = self.historical_targets(onehot, sample_idx, len(heads))
            weights = (self.teacher_weight, ) + self.student_weights
            names = ('teacher', ) + tuple(
                f'student{b}' for b in outs.student_ids)
            for h, (name, logits, w) in enumerate(zip(names, heads,
                                                      weights)):
                if w:
                    losses[f'loss_hist_{name}'] = self.hist_weight * w * \
                        cross_entropy_any(logits, hist[:, h])
        losses.update(
            kd_terms(outs, self.kd_weight, self.temperature, self.kl_eps,
                     self.teacher_detach))
        if self.training:
            probs = torch.stack(
                [F.softmax(z.detach().float(), dim=1) for z in heads], dim=1)
            self.memory.write(sample_idx.to(probs.device), probs)
        return losses
