"""Mixed Fusion Module: the top-down pathway that feeds TESKD's students."""
from typing import NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmengine.model import BaseModule, initialize

from mmpretrain.registry import MODELS

from ..utils.fast_conv import (can_fold_batch_stats, is_pointwise,
                               mixed_fuse, norm_act, pointwise_bn_act)
from ..utils.students import check_students

FUSION_MODES = ('mixed', 'add', 'concat', 'none')


class MFMOutput(NamedTuple):
    """What :class:`MFMNeck` hands to the head.

    Attributes:
        teacher (Tensor): The backbone's last stage ``T_L``, shape
            ``(N, C_L, H_L, W_L)``; the teacher classifier pools it.
        students (tuple[Tensor]): The fused maps ``S_b``, one per active
            student, in the order of ``student_ids``, each of shape
            ``(N, out_channels, H_b, W_b)``.
        student_ids (tuple[int]): The 1-based level of each student map
            (``1`` is the shallowest stage).
    """
    teacher: torch.Tensor
    students: Tuple[torch.Tensor, ...]
    student_ids: Tuple[int, ...]


class Upsample(nn.Module):
    """Bilinear x2 upsampling with ``align_corners=True``, then 1x1 conv-BN-ReLU.

    With ``fast=True`` the 1x1 conv runs before the interpolation, on the 4x
    smaller map: both are linear, one across channels and the other across
    pixels with weights that sum to one, so they commute (bias included).
    BN stays after the interpolation, whose batch statistics are those of
    the upsampled map. The result is the same up to rounding at a quarter of
    the conv's cost, in the channels_last memory format, in which the 1x1
    convs of the fusion run as plain matrix products.

    Args:
        channels (int): Input and output channels.
        norm_cfg (dict): Config of the normalization layer.
        fast (bool): Run the rewrite above. Defaults to True.
    """

    def __init__(self, channels: int, norm_cfg: dict,
                 fast: bool = True) -> None:
        super().__init__()
        self.fast = fast
        self.conv = ConvModule(channels, channels, 1, norm_cfg=norm_cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.fast and is_pointwise(self.conv)):
            return self.conv(
                F.interpolate(
                    x, scale_factor=2, mode='bilinear', align_corners=True))
        x = x.contiguous(memory_format=torch.channels_last)
        x = F.interpolate(
            self.conv.conv(x),
            scale_factor=2,
            mode='bilinear',
            align_corners=True)
        return norm_act(self.conv, x)


class Lateral(ConvModule):
    """1x1 conv-BN-ReLU from a backbone stage to the fused width.

    With ``fast=True``, a lateral that widens its input fourfold or more
    (ResNet-18: 64 and 128 to 512 channels) takes BN's batch statistics
    from its narrow input and runs conv and BN as one conv
    (:func:`~teskd_mm.models.utils.fast_conv.pointwise_bn_act`); the same
    function up to rounding, running statistics included.

    Args:
        in_channels (int): Channels of the stage.
        out_channels (int): The fused width.
        norm_cfg (dict): Config of the normalization layer.
        fast (bool): Run the rewrite above where it applies. Defaults to
            True.
    """

    def __init__(self, in_channels: int, out_channels: int, norm_cfg: dict,
                 fast: bool = True) -> None:
        super().__init__(in_channels, out_channels, 1, norm_cfg=norm_cfg)
        self.fast = fast

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fast and can_fold_batch_stats(self):
            return pointwise_bn_act(self, x)
        return super().forward(x)


@MODELS.register_module()
class MFMNeck(BaseModule):
    """Mixed Fusion Module neck of TESKD (arXiv 2110.00329, Eqn. 4).

    Builds the student features top-down from the backbone's stages
    ``T_1 .. T_L`` (``L = len(in_channels)``, four for the paper's networks)::

        S_L = lateral_L(T_L)
        for b = L-1 .. lowest active student:
            u   = up_b(S_{b+1})                       # x2 bilinear + 1x1 conv
            S_b = fuse_b(cat([u + lateral_b(T_b), u]))  # 'mixed'

    Every lateral, upsample and fuse is a 1x1 conv without bias, BN and
    ReLU, and every ``S_b`` has ``out_channels`` channels. Only the levels
    the active students need are built, so no parameter goes unused.

    Args:
        in_channels (Sequence[int]): Channels of each backbone stage, shallow
            to deep, e.g. ``(64, 128, 256, 512)`` for ResNet-18.
        out_channels (int, optional): Width of every fused level. Defaults to
            the last stage's channels (512 for ResNet-18), as in the paper.
        fusion (str): How the upsampled map ``u`` and the lateral ``l`` merge,
            the rows of the paper's Table 4: ``'mixed'`` (default,
            ``fuse(cat[u + l, u])``), ``'add'`` (FPN style, ``u + l``),
            ``'concat'`` (UNet style, ``fuse(cat[u, l])``, the 1x1 conv
            halving the channels) or ``'none'`` (``u`` alone, no lateral).
        students (Sequence[int]): The 1-based levels that feed a student,
            among ``1 .. L-1``. Defaults to ``(1, 2, 3)``; Table 5 also uses
            ``(2, 3)`` and ``(3,)``.
        norm_cfg (dict): Config of the normalization layers. Defaults to
            ``dict(type='BN')``.
        fast (bool): Run the exact rewrites of
            :mod:`~teskd_mm.models.utils.fast_conv` (the 1x1 conv before the
            upsampling, the mixed fuse without its concatenation, the
            shallow laterals' BN statistics from their narrow inputs, the
            channels_last memory format). ``False`` runs the plain
            transcription of the published module; outputs agree to
            rounding and checkpoints are the same. Defaults to True.
        init_cfg (dict, optional): Initialization config. Defaults to None.
    """

    def __init__(self,
                 in_channels: Sequence[int],
                 out_channels: Optional[int] = None,
                 fusion: str = 'mixed',
                 students: Sequence[int] = (1, 2, 3),
                 norm_cfg: dict = dict(type='BN'),
                 fast: bool = True,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        in_channels = tuple(int(c) for c in in_channels)
        num_levels = len(in_channels)
        if num_levels < 2:
            raise ValueError(
                f'MFMNeck needs at least two backbone stages, got '
                f'in_channels={in_channels}; for ResNet-18 use '
                'in_channels=(64, 128, 256, 512) with the backbone\'s '
                'out_indices=(0, 1, 2, 3).')
        if fusion not in FUSION_MODES:
            raise ValueError(f'Unknown MFMNeck fusion {fusion!r}; choose one '
                             f'of {FUSION_MODES}.')
        students = check_students(type(self).__name__, students, num_levels)

        self.in_channels = in_channels
        if out_channels is not None and int(out_channels) < 1:
            raise ValueError(
                f'MFMNeck out_channels={out_channels} must be at least 1; '
                f'leave it out for the last stage\'s {in_channels[-1]} (the '
                'paper\'s fused width).')
        self.out_channels = int(out_channels or in_channels[-1])
        self.fusion = fusion
        self.fast = fast
        self.students = students
        self.num_levels = num_levels
        # Levels from the shallowest student up to L-1 must be fused, even
        # those without a student of their own, to reach the shallow ones.
        self.levels = tuple(range(students[0], num_levels))

        C = self.out_channels
        self.norm_cfg = norm_cfg
        self.lateral_top = self.build_lateral_top(in_channels[-1], C)
        self.laterals = nn.ModuleDict()
        self.upsamples = nn.ModuleDict()
        self.fuses = nn.ModuleDict()
        for b in self.levels:
            key = str(b)
            self.upsamples[key] = self.build_upsample(C)
            if fusion != 'none':
                self.laterals[key] = self.build_lateral(in_channels[b - 1], C)
            if fusion in ('mixed', 'concat'):
                self.fuses[key] = self.build_fuse(2 * C, C)

    # The building blocks; subclasses that fuse other kinds of maps (e.g.
    # pooled vectors) override these and keep the top-down order.
    def build_lateral_top(self, in_channels: int,
                          out_channels: int) -> nn.Module:
        """The start of the top-down path, ``S_L``, from the last stage."""
        return self.build_lateral(in_channels, out_channels)

    def build_lateral(self, in_channels: int, out_channels: int) -> nn.Module:
        """1x1 conv-BN-ReLU from a backbone stage to the fused width."""
        return Lateral(in_channels, out_channels, self.norm_cfg, self.fast)

    def build_upsample(self, channels: int) -> nn.Module:
        """x2 bilinear upsampling followed by 1x1 conv-BN-ReLU."""
        return Upsample(channels, self.norm_cfg, self.fast)

    def build_fuse(self, in_channels: int, out_channels: int) -> nn.Module:
        """1x1 conv-BN-ReLU over the concatenation."""
        return ConvModule(in_channels, out_channels, 1, norm_cfg=self.norm_cfg)

    def init_weights(self) -> None:
        """Apply ``init_cfg`` to every layer, ``lateral_top`` included.

        mmengine runs the ``init_weights`` of direct children after the
        neck's ``init_cfg``; a ConvModule child re-draws its conv there, so
        ``lateral_top`` alone would miss the config's initialisation.
        """
        super().init_weights()
        if self.init_cfg:
            initialize(self.lateral_top, self.init_cfg)

    def _check_inputs(self, inputs: Sequence[torch.Tensor]) -> None:
        if not isinstance(inputs, (tuple, list)) or \
                len(inputs) != self.num_levels:
            got = len(inputs) if isinstance(inputs, (tuple, list)) else 1
            raise ValueError(
                f'MFMNeck expects {self.num_levels} backbone stage outputs '
                f'(in_channels={self.in_channels}) but got {got}; set the '
                f'backbone\'s out_indices={tuple(range(self.num_levels))} '
                '(all stages, shallow to deep).')
        if any(x.dim() != 4 for x in inputs):
            raise ValueError(
                'MFMNeck takes (N, C, H, W) feature maps but the backbone '
                f'gives shapes {[tuple(x.shape) for x in inputs]}; set the '
                'backbone to return unpooled maps (for ConvNeXt: '
                'gap_before_final_norm=False).')
        sizes = [tuple(x.shape[-2:]) for x in inputs]
        if any(a[0] < b[0] or a[1] < b[1] for a, b in zip(sizes, sizes[1:])):
            raise ValueError(
                f'MFMNeck takes the backbone stages shallow to deep, but '
                f'their sizes {sizes} grow along the list; give the '
                'backbone\'s out_indices in increasing order.')
        channels = tuple(x.shape[1] for x in inputs)
        if channels != self.in_channels:
            raise ValueError(
                f'The backbone stages have channels {channels} but MFMNeck '
                f'in_channels={self.in_channels}; set the neck\'s '
                f'in_channels={channels} (and the head\'s '
                f'in_channels={channels[-1]}).')
        self._check_sizes(inputs)

    def _check_sizes(self, inputs: Sequence[torch.Tensor]) -> None:
        for b in self.levels:
            low, high = inputs[b - 1].shape[-2:], inputs[b].shape[-2:]
            if tuple(low) != (2 * high[0], 2 * high[1]):
                raise ValueError(
                    f'MFMNeck needs every stage at twice the size of the '
                    f'next one, but stage {b} is {tuple(low)} and stage '
                    f'{b + 1} is {tuple(high)}; use an input size that '
                    'halves evenly through the backbone (a multiple of its '
                    'total stride).')

    def forward(self, inputs: Sequence[torch.Tensor]) -> MFMOutput:
        """Fuse the backbone's stages top-down.

        Args:
            inputs (Sequence[Tensor]): The backbone's stage outputs, shallow
                to deep.

        Returns:
            MFMOutput: the teacher's last-stage map and the student maps.
        """
        self._check_inputs(inputs)
        fused = {}
        s = self.lateral_top(inputs[-1])
        for b in reversed(self.levels):
            key = str(b)
            u = self.upsamples[key](s)
            if self.fusion == 'none':
                fused[b] = s = u
                continue
            stage = inputs[b - 1]
            if self.fast:
                # u is channels_last (see Upsample); the lateral follows,
                # so that the sums and 1x1 convs see one memory format.
                stage = stage.contiguous(memory_format=torch.channels_last)
            lat = self.laterals[key](stage)
            if self.fusion == 'add':
                s = u + lat
            elif self.fusion == 'mixed':
                s = mixed_fuse(self.fuses[key], u, lat) if self.fast else \
                    self.fuses[key](torch.cat([u + lat, u], dim=1))
            else:  # concat
                s = self.fuses[key](torch.cat([u, lat], dim=1))
            fused[b] = s
        return MFMOutput(
            teacher=inputs[-1],
            students=tuple(fused[b] for b in self.students),
            student_ids=self.students)
