"""The teacher classifier of DTSKD and its linear students."""
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample
from ..necks.mfm_neck import MFMOutput
from .multi_branch_cls_head import MultiBranchClsHead


class LinearStudent(nn.Module):
    """One DTSKD student: a Linear on its fused vector.

    Args:
        in_channels (int): Width of the fused vector.
        num_classes (int): Number of classes.
    """

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Return the vector and the logits of the student."""
        feat = x.flatten(1)
        return feat, self.fc(feat)


def sample_indices(data_samples: List[DataSample]) -> torch.Tensor:
    """The index in the data set of each sample of a batch.

    mmengine's ``BaseDataset`` puts ``sample_idx`` into every sample's data
    information and mmpretrain's ``PackInputs`` keeps it in the metainfo by
    default.

    Args:
        data_samples (List[DataSample]): The batch's annotations.

    Returns:
        Tensor: ``(N,)`` int64 indices.
    """
    indices = [s.metainfo.get('sample_idx') for s in data_samples]
    if any(i is None for i in indices):
        raise KeyError(
            'DTSKD\'s historical teacher needs each sample\'s index in the '
            'data set, but the data samples carry no \'sample_idx\'. Keep '
            '\'sample_idx\' in PackInputs\'s meta_keys (it is in the '
            'default ones), and use a data set derived from mmengine\'s '
            'BaseDataset, which sets it.')
    return torch.as_tensor([int(i) for i in indices], dtype=torch.long)


@MODELS.register_module()
class DTSKDHead(MultiBranchClsHead):
    """DTSKD head: the teacher classifier plus a Linear per student.

    It takes the output of :class:`DTSKDNeck`. The teacher is the same
    global pool and Linear as in :class:`MultiBranchClsHead` (so the trained
    teacher deploys as a stock ``LinearClsHead``); each student is a Linear
    on its fused vector. In training, :meth:`loss` passes each sample's
    ``sample_idx`` to the loss, whose historical teacher keys its memory on
    it.

    Args:
        num_classes (int): Number of classes.
        in_channels (int): Channels of the backbone's last stage.
        branch_in_channels (int, optional): Width of the fused vectors, the
            neck's ``out_channels``. Defaults to ``in_channels``.
        students (Sequence[int]): Levels of the active students, as in the
            neck. Defaults to ``(1, 2, 3)``.
        num_levels (int): Number of backbone stages. Defaults to 4.
        loss (dict): Config of the loss. Defaults to
            ``dict(type='DTSKDLoss')``.
        eval_students (bool): Whether :meth:`predict` also scores the
            students. Defaults to True.
        topk (int | tuple[int]): Top-k accuracy. Defaults to ``(1, )``.
        init_cfg (dict, optional): Initialization config. Defaults to a
            ``Normal(std=0.01)`` init of the Linear layers.
    """

    def __init__(self,
                 num_classes: int,
                 in_channels: int,
                 branch_in_channels: Optional[int] = None,
                 students: Sequence[int] = (1, 2, 3),
                 num_levels: int = 4,
                 loss: dict = dict(type='DTSKDLoss'),
                 eval_students: bool = True,
                 topk: Union[int, Tuple[int]] = (1, ),
                 init_cfg: Optional[dict] = dict(
                     type='Normal', layer='Linear', std=0.01)) -> None:
        super().__init__(
            num_classes=num_classes,
            in_channels=in_channels,
            branch_in_channels=branch_in_channels,
            students=students,
            num_levels=num_levels,
            loss=loss,
            eval_students=eval_students,
            topk=topk,
            init_cfg=init_cfg)

    def build_branch(self, index: int) -> nn.Module:
        """A Linear on the fused vector."""
        return LinearStudent(self.branch_in_channels, self.num_classes)

    def _check_sizes(self, feats: MFMOutput) -> None:
        for b, s in zip(self.students, feats.students):
            if tuple(s.shape[-2:]) != (1, 1):
                raise ValueError(
                    f'DTSKDHead takes pooled student vectors, but student '
                    f'{b}\'s map is {tuple(s.shape[-2:])}; use '
                    'neck=dict(type=\'DTSKDNeck\', ...), whose outputs are '
                    '1x1.')

    def undo_skipped_step(self) -> None:
        """The memory rows the skipped step wrote go back to what they
        were."""
        self.loss_module.memory.undo_last_write()

    def check_training_data(self, dataset_cfg: dict, num_images: int) -> None:
        """The memory needs one row per training image, keyed by a
        ``sample_idx`` that is unique in the training set."""
        self.loss_module.memory.check_training_data(dataset_cfg, num_images)

    def loss(self, feats: MFMOutput, data_samples: List[DataSample],
             **kwargs) -> dict:
        """Compute the loss of the teacher and all students.

        Args:
            feats (MFMOutput): The neck's output.
            data_samples (List[DataSample]): The annotations, with
                ``sample_idx`` in their metainfo; ``gt_score`` is used where
                present, else ``gt_label``.
            **kwargs: Passed on to the loss module.

        Returns:
            dict[str, Tensor]: The loss terms, named per term and branch.
        """
        kwargs.setdefault('sample_idx', sample_indices(data_samples))
        return super().loss(feats, data_samples, **kwargs)
