"""The fusion of DTSKD: MFMNeck's top-down order on pooled vectors."""
from typing import Optional, Sequence

import torch
import torch.nn as nn
from mmcv.cnn import ConvModule

from mmpretrain.registry import MODELS
from .mfm_neck import MFMNeck


@MODELS.register_module()
class DTSKDNeck(MFMNeck):
    """Lightweight fusion of DTSKD ("Dual Teachers for Self-Knowledge
    Distillation", Pattern Recognition 2024).

    The same top-down order and fusion as :class:`MFMNeck`, on vectors::

        S_L = pool(T_L)                               # no parameters
        for b = L-1 .. lowest active student:
            u   = up_b(S_{b+1})                       # 1x1 conv-BN-ReLU
            S_b = fuse_b(cat([u + lateral_b(T_b), u]))  # 'mixed'

    where ``lateral_b`` is a global average pool followed by a 1x1
    conv-BN-ReLU (no bias), and every ``S_b`` is an ``(N, C_L, 1, 1)`` map.
    With ResNet-18's stages (64, 128, 256, 512) and students (1, 2, 3) the
    neck has 2,597,888 parameters.

    The fused vectors are batch-normalised, so training needs at least two
    samples per batch (per process).

    Args:
        in_channels (Sequence[int]): Channels of each backbone stage, shallow
            to deep.
        out_channels (int, optional): Width of the fused vectors. It must be
            the last stage's channels, since the pooled last stage is used
            as is. Defaults to that.
        fusion (str): As in :class:`MFMNeck`; defaults to ``'mixed'``.
        students (Sequence[int]): The levels that feed a student. Defaults
            to ``(1, 2, 3)``.
        norm_cfg (dict): Config of the normalization layers.
        fast (bool): As in :class:`MFMNeck` (the mixed fuse without its
            concatenation). Defaults to True.
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
        top = tuple(in_channels)[-1] if len(tuple(in_channels)) else None
        if out_channels is not None and out_channels != top:
            raise ValueError(
                f'DTSKDNeck out_channels={out_channels} must equal the last '
                f'stage\'s channels ({top}): the pooled last stage is used '
                f'as is. Set out_channels={top} or leave it out.')
        super().__init__(
            in_channels,
            out_channels=out_channels,
            fusion=fusion,
            students=students,
            norm_cfg=norm_cfg,
            fast=fast,
            init_cfg=init_cfg)

    def build_lateral_top(self, in_channels: int,
                          out_channels: int) -> nn.Module:
        """The pooled last stage itself: no parameters."""
        return nn.AdaptiveAvgPool2d(1)

    def build_lateral(self, in_channels: int, out_channels: int) -> nn.Module:
        """Global average pool, then 1x1 conv-BN-ReLU."""
        return nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            ConvModule(in_channels, out_channels, 1, norm_cfg=self.norm_cfg))

    def build_upsample(self, channels: int) -> nn.Module:
        """A 1x1 conv-BN-ReLU: the vectors have no size to upsample."""
        return ConvModule(channels, channels, 1, norm_cfg=self.norm_cfg)

    def _check_sizes(self, inputs: Sequence[torch.Tensor]) -> None:
        # Pooling accepts any stage sizes; batch norm over vectors does not
        # accept a single sample in training.
        if self.training and inputs[-1].size(0) < 2:
            raise ValueError(
                'DTSKDNeck batch-normalises pooled vectors, which needs at '
                f'least 2 samples per batch in training, got '
                f'{inputs[-1].size(0)}; use a batch size of 2 or more per '
                'process.')
