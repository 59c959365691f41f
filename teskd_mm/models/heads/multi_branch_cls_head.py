"""The teacher classifier of TESKD and its hierarchical student branches."""
import warnings
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmengine.model import BaseModule

from mmpretrain.models.heads import ClsHead
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

from ..necks.mfm_neck import MFMOutput
from ..utils import can_patchify, conv1x1_rows, norm_act, patchify_conv
from ..utils.students import check_students
from .self_kd_head import SelfKDHead


class BranchOutputs(NamedTuple):
    """All classifier outputs of one forward pass.

    Attributes:
        teacher_logits (Tensor): ``(N, num_classes)``.
        teacher_feat (Tensor): The teacher's pooled feature, ``(N, C)``.
        student_logits (tuple[Tensor]): One ``(N, num_classes)`` per student.
        student_feats (tuple[Tensor]): One pooled ``(N, C')`` per student.
        student_ids (tuple[int]): The level of each student.
    """
    teacher_logits: torch.Tensor
    teacher_feat: torch.Tensor
    student_logits: Tuple[torch.Tensor, ...]
    student_feats: Tuple[torch.Tensor, ...]
    student_ids: Tuple[int, ...]


class StudentBranch(BaseModule):
    """One student: strided conv-BN-ReLU, 1x1 conv-BN-ReLU, pool, Linear.

    The first convolution has ``kernel_size == stride == kernel`` and brings
    the student map down to the teacher's last-stage size. With
    ``fast=True`` both convolutions run as matrix products over pixel rows
    (space-to-depth for the strided one): the same function, up to rounding,
    without the slow large-kernel CPU convolution.

    Args:
        in_channels (int): Channels of the student map ``S_b``.
        channels (int): Width of the branch convolutions.
        num_classes (int): Number of classes.
        kernel (int): Kernel size and stride of the first convolution.
        norm_cfg (dict): Config of the normalization layers.
        fast (bool): Run the rewrite above. Defaults to True.
    """

    def __init__(self,
                 in_channels: int,
                 channels: int,
                 num_classes: int,
                 kernel: int,
                 norm_cfg: dict,
                 fast: bool = True) -> None:
        super().__init__()
        self.kernel = kernel
        self.fast = fast
        # The released branches keep the conv biases in front of BN (their
        # parameter counts include them); mmcv warns of such a bias, which
        # here is deliberate.
        with warnings.catch_warnings():
            warnings.filterwarnings(
                'ignore', message='Unnecessary conv bias before batch')
            self.reduce = ConvModule(
                in_channels, channels, kernel, stride=kernel, bias=True,
                norm_cfg=norm_cfg)
            self.mix = ConvModule(
                channels, channels, 1, bias=True, norm_cfg=norm_cfg)
        self.fc = nn.Linear(channels, num_classes)

    def _fast(self, x: torch.Tensor) -> bool:
        k = self.reduce.conv.kernel_size[0]
        return (self.fast and x.dim() == 4 and x.shape[-1] % k == 0
                and x.shape[-2] % k == 0 and can_patchify(self.reduce)
                and can_patchify(self.mix)
                and self.mix.conv.kernel_size == (1, 1))

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Return the pooled feature and the logits of the student."""
        if not self._fast(x):
            feat = self.mix(self.reduce(x))
            feat = F.adaptive_avg_pool2d(feat, 1).flatten(1)
            return feat, self.fc(feat)
        # The same layers on (N*h*w, C) pixel rows: the kernel == stride
        # conv is a space-to-depth reshape and one matmul, the 1x1 conv a
        # matmul, and BN takes its statistics over the same N*h*w pixels.
        rows = norm_act(self.reduce, patchify_conv(x, self.reduce.conv))
        rows = norm_act(self.mix, conv1x1_rows(rows, self.mix.conv))
        feat = rows.reshape(x.shape[0], -1, rows.shape[-1]).mean(1)
        return feat, self.fc(feat)


@MODELS.register_module()
class MultiBranchClsHead(SelfKDHead, ClsHead):
    """TESKD head: the teacher classifier plus one branch per student.

    It takes the :class:`MFMOutput` of :class:`MFMNeck`. The teacher is a
    global average pool and a Linear on the backbone's last stage, exactly
    mmpretrain's ``GlobalAveragePooling`` + ``LinearClsHead``, so the trained
    teacher deploys as a stock model. In eval mode :meth:`forward` returns the
    teacher's logits only and :meth:`predict` the teacher's scores; the
    students' scores ride along in each ``DataSample`` as ``student_scores``
    for :class:`MultiBranchAccuracy`.

    Args:
        num_classes (int): Number of classes.
        in_channels (int): Channels of the backbone's last stage.
        branch_in_channels (int, optional): Channels of the student maps,
            the neck's ``out_channels``. Defaults to ``in_channels``.
        branch_channels (int, optional): Width of the branch convolutions.
            Defaults to ``branch_in_channels``.
        students (Sequence[int]): Levels of the active students, as in the
            neck. Defaults to ``(1, 2, 3)``.
        branch_kernels (Sequence[int], optional): Kernel (= stride) of each
            student's first convolution, in the order of ``students``.
            Defaults to ``2 ** (num_levels - b) // branch_end_scale`` (8, 4,
            2 for four stages that halve), which lands every student on
            ``branch_end_scale`` times the teacher's size.
        branch_end_scale (int): Students end at this multiple of the last
            stage's size: 1 (default) for the paper's ResNets (4x4 at 32
            px); 2 for the released CIFAR VGG, whose students end at 2x2
            over a 1x1 last stage (kernels 4, 2, 1).
        num_levels (int): Number of backbone stages. Defaults to 4.
        loss (dict): Config of the loss on all outputs. Defaults to
            ``dict(type='TESKDLoss')``.
        eval_students (bool): Whether :meth:`predict` also scores the
            students, for the validation of each branch. Defaults to True.
        norm_cfg (dict): Config of the normalization layers.
        fast (bool): Run the students' convolutions as matrix products over
            pixel rows (see :class:`StudentBranch`); ``False`` runs the
            plain convolutions. Outputs agree to rounding and checkpoints
            are the same. Defaults to True.
        topk (int | tuple[int]): Top-k accuracy. Defaults to ``(1, )``.
        init_cfg (dict, optional): Initialization config. Defaults to a
            ``Normal(std=0.01)`` init of the Linear layers, as
            ``LinearClsHead``.
    """

    def __init__(self,
                 num_classes: int,
                 in_channels: int,
                 branch_in_channels: Optional[int] = None,
                 branch_channels: Optional[int] = None,
                 students: Sequence[int] = (1, 2, 3),
                 branch_kernels: Optional[Sequence[int]] = None,
                 num_levels: int = 4,
                 branch_end_scale: int = 1,
                 loss: dict = dict(type='TESKDLoss'),
                 eval_students: bool = True,
                 norm_cfg: dict = dict(type='BN'),
                 fast: bool = True,
                 topk: Union[int, Tuple[int]] = (1, ),
                 init_cfg: Optional[dict] = dict(
                     type='Normal', layer='Linear', std=0.01)) -> None:
        super().__init__(loss=loss, topk=topk, init_cfg=init_cfg)
        if num_classes <= 0:
            raise ValueError(
                f'num_classes={num_classes} must be a positive integer')
        students = check_students(type(self).__name__, students, num_levels)
        if branch_end_scale < 1 or 2**(num_levels - students[-1]) % \
                branch_end_scale:
            raise ValueError(
                f'branch_end_scale={branch_end_scale} must be a power of two '
                f'of at most {2**(num_levels - students[-1])}, so that '
                f'student {students[-1]} can end there.')
        self.branch_end_scale = branch_end_scale
        if branch_kernels is None:
            branch_kernels = tuple(2**(num_levels - b) // branch_end_scale
                                   for b in students)
        branch_kernels = tuple(int(k) for k in branch_kernels)
        if len(branch_kernels) != len(students):
            raise ValueError(
                f'branch_kernels={branch_kernels} must give one kernel per '
                f'student in students={students}.')

        self.num_classes = num_classes
        self.in_channels = in_channels
        self.students = students
        self.branch_kernels = branch_kernels
        self.eval_students = eval_students
        self.branch_in_channels = branch_in_channels or in_channels
        self.branch_channels = branch_channels or self.branch_in_channels
        self.norm_cfg = norm_cfg
        self.fast = fast

        self.fc = nn.Linear(in_channels, num_classes)
        self.branches = nn.ModuleDict(
            {str(b): self.build_branch(i)
             for i, b in enumerate(students)})

    def build_branch(self, index: int) -> nn.Module:
        """The student ``self.students[index]``; it maps its student map to
        ``(feature, logits)``."""
        return StudentBranch(self.branch_in_channels, self.branch_channels,
                             self.num_classes, self.branch_kernels[index],
                             self.norm_cfg, self.fast)

    def _check_feats(self, feats: MFMOutput) -> None:
        if not isinstance(feats, MFMOutput):
            raise TypeError(
                'MultiBranchClsHead takes the output of MFMNeck, got '
                f'{type(feats).__name__}; set neck=dict(type=\'MFMNeck\', ...)'
                ' in the model config.')
        if tuple(feats.student_ids) != self.students:
            raise ValueError(
                f'The neck feeds students {tuple(feats.student_ids)} but the '
                f'head has students={self.students}; give both the same '
                '`students`.')
        if feats.teacher.shape[1] != self.in_channels:
            raise ValueError(
                f'The last stage has {feats.teacher.shape[1]} channels but '
                f'MultiBranchClsHead in_channels={self.in_channels}; set '
                f'the head\'s in_channels={feats.teacher.shape[1]}.')
        self._check_sizes(feats)

    def _check_sizes(self, feats: MFMOutput) -> None:
        top = tuple(self.branch_end_scale * t
                    for t in feats.teacher.shape[-2:])
        sizes = [tuple(s.shape[-2:]) for s in feats.students]
        fit = tuple(size[1] // top[1] for size in sizes)
        for b, k, size, f in zip(self.students, self.branch_kernels, sizes,
                                 fit):
            if size != (k * top[0], k * top[1]):
                exact = all(s == (f * top[0], f * top[1]) and f > 0
                            for s, f in zip(sizes, fit))
                hint = (f'set the head\'s branch_kernels={fit}'
                        if exact else 'set branch_kernels so that kernel x '
                        'last-stage size x branch_end_scale = student size')
                raise ValueError(
                    f'Student {b}\'s map is {size} and the students end at '
                    f'{top}, so its branch kernel must be {size[0] // top[0]}'
                    f', but it is {k}; {hint}.')

    def pre_logits(self, feats: MFMOutput) -> torch.Tensor:
        """The teacher's pooled last-stage feature, ``(N, in_channels)``."""
        return F.adaptive_avg_pool2d(feats.teacher, 1).flatten(1)

    def forward_all(self, feats: MFMOutput) -> BranchOutputs:
        """Run the teacher and every student branch."""
        self._check_feats(feats)
        teacher_feat = self.pre_logits(feats)
        student_feats, student_logits = [], []
        for b, s in zip(self.students, feats.students):
            feat, logits = self.branches[str(b)](s)
            student_feats.append(feat)
            student_logits.append(logits)
        return BranchOutputs(
            teacher_logits=self.fc(teacher_feat),
            teacher_feat=teacher_feat,
            student_logits=tuple(student_logits),
            student_feats=tuple(student_feats),
            student_ids=self.students)

    def branch_features(self,
                        feats: MFMOutput) -> Dict[str, torch.Tensor]:
        """The pooled feature of the teacher and of every student."""
        outs = self.forward_all(feats)
        found = {'teacher': outs.teacher_feat}
        found.update((f'student{b}', f)
                     for b, f in zip(outs.student_ids, outs.student_feats))
        return found

    def forward(
            self,
            feats: MFMOutput) -> Union[torch.Tensor, BranchOutputs]:
        """The teacher's logits in eval mode; all outputs in train mode."""
        if self.training:
            return self.forward_all(feats)
        return self.fc(self.pre_logits(feats))

    def loss(self, feats: MFMOutput, data_samples: List[DataSample],
             **kwargs) -> dict:
        """Compute the loss of the teacher and all students.

        Args:
            feats (MFMOutput): The neck's output.
            data_samples (List[DataSample]): The annotations; ``gt_score``
                (from batch augmentations) is used where present, as
                ``ClsHead`` does, else ``gt_label``.
            **kwargs: Passed on to the loss module.

        Returns:
            dict[str, Tensor]: The loss terms, each named for its term and
            branch.
        """
        outs = self.forward_all(feats)
        width, teacher_width = (outs.student_feats[0].shape[1],
                                outs.teacher_feat.shape[1])
        if getattr(self.loss_module, 'fea_weight', 0) and \
                width != teacher_width:
            raise ValueError(
                'The feature loss compares each student\'s pooled feature '
                f'({width} channels, the head\'s branch_channels) with the '
                f'teacher\'s ({teacher_width}); set branch_channels='
                f'{teacher_width}, or the loss\'s fea_weight=0.')
        if 'gt_score' in data_samples[0]:
            target = torch.stack([i.gt_score for i in data_samples])
        else:
            target = torch.cat([i.gt_label for i in data_samples])
        return self.loss_module(outs, target, **kwargs)

    def predict(
        self,
        feats: MFMOutput,
        data_samples: Optional[List[Optional[DataSample]]] = None
    ) -> List[DataSample]:
        """The teacher's predictions; students' scores attached if asked.

        Args:
            feats (MFMOutput): The neck's output.
            data_samples (List[DataSample | None], optional): Samples to
                fill. Defaults to None.

        Returns:
            List[DataSample]: ``pred_score`` and ``pred_label`` of the
            teacher; with ``eval_students``, also ``student_scores``
            (``(num_students, num_classes)`` softmax scores) and the metainfo
            ``student_ids``.
        """
        if not self.eval_students:
            return self._get_predictions(self.fc(self.pre_logits(feats)),
                                         data_samples)
        outs = self.forward_all(feats)
        predictions = self._get_predictions(outs.teacher_logits, data_samples)
        scores = torch.stack([F.softmax(s, dim=1) for s in outs.student_logits],
                             dim=1)
        for sample, score in zip(predictions, scores):
            sample.set_field(score, 'student_scores')
            sample.set_metainfo(dict(student_ids=outs.student_ids))
        return predictions
