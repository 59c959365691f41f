"""VGG for 32x32 inputs: the first block as the stem, four stages after it."""
from typing import Optional, Sequence, Union

from mmpretrain.models.backbones import VGG
from mmpretrain.registry import MODELS


@MODELS.register_module()
class VGG_CIFAR(VGG):
    """VGG backbone for CIFAR, as the four-stage network of TESKD.

    The layers are exactly those of :class:`mmpretrain.models.VGG` with
    ``num_stages=5`` (3x3 convolutions with bias, each stage ending in a 2x2
    max-pool) and no fully-connected classifier; what changes is how they are
    grouped. The first block (the 64-channel convolutions and their max-pool)
    is the stem, and the four blocks after it are the stages that
    ``out_indices`` and ``frozen_stages`` count, as in ResNet. On a 32x32
    image the stages are 128@8x8, 256@4x4, 512@2x2 and 512@1x1, the layout
    of the CIFAR VGG that TESKD was published with. VGG-16 has
    (2, 2, 3, 3, 3) and VGG-19 (2, 2, 4, 4, 4) convolutions per block.
    The attribute ``out_indices`` keeps VGG's own numbering (one higher).

    Args:
        depth (int): Depth of VGG, from {11, 13, 16, 19}.
        out_indices (Sequence[int]): Output from which of the four stages
            (0-3, the stem excluded). Defaults to ``(3, )``.
        frozen_stages (int): Stages to freeze: -1 freezes nothing, 0 the
            stem, ``k`` the stem and the first ``k`` stages. Defaults to -1.
        dilations (Sequence[int]): Dilation of each of the four stages.
            Defaults to ``(1, 1, 1, 1)``.
        conv_cfg (dict, optional): Config of the convolutions.
        norm_cfg (dict, optional): Config of the normalization layers.
            Defaults to BN, as CIFAR VGGs use; None builds VGG without norm.
        act_cfg (dict): Config of the activations. Defaults to ReLU.
        norm_eval (bool): Keep the norm layers in eval mode in training.
            Defaults to False.
        ceil_mode (bool): ``ceil_mode`` of the max-pools. Defaults to False.
        init_cfg (dict | list[dict], optional): Initialization config.
            Defaults to that of :class:`VGG`.

    Example:
        >>> import torch
        >>> from teskd_mm.models import VGG_CIFAR
        >>> model = VGG_CIFAR(16, out_indices=(0, 1, 2, 3))
        >>> for out in model(torch.rand(1, 3, 32, 32)):
        ...     print(tuple(out.shape))
        (1, 128, 8, 8)
        (1, 256, 4, 4)
        (1, 512, 2, 2)
        (1, 512, 1, 1)
    """
    num_body_stages = 4

    def __init__(self,
                 depth: int,
                 out_indices: Sequence[int] = (3, ),
                 frozen_stages: int = -1,
                 dilations: Sequence[int] = (1, 1, 1, 1),
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: Optional[dict] = dict(type='BN'),
                 act_cfg: dict = dict(type='ReLU'),
                 norm_eval: bool = False,
                 ceil_mode: bool = False,
                 init_cfg: Optional[Union[dict, list]] = None) -> None:
        if isinstance(out_indices, int):
            out_indices = (out_indices, )
        out_indices = tuple(out_indices)
        n = self.num_body_stages
        if not out_indices or any(i not in range(n) for i in out_indices):
            raise ValueError(
                f'VGG_CIFAR out_indices={out_indices} must be among '
                f'{tuple(range(n))} (its four stages after the stem), e.g. '
                f'out_indices={tuple(range(n))} for all of them.')
        if len(dilations) != n:
            raise ValueError(
                f'VGG_CIFAR needs one dilation per stage, {n} in all, got '
                f'dilations={tuple(dilations)}.')
        kwargs = dict(init_cfg=init_cfg) if init_cfg is not None else {}
        # Index 0 of VGG is the stem here, so every index moves up by one.
        super().__init__(
            depth,
            num_classes=-1,
            num_stages=n + 1,
            dilations=(1, ) + tuple(dilations),
            out_indices=tuple(i + 1 for i in out_indices),
            frozen_stages=frozen_stages + 1 if frozen_stages >= 0 else -1,
            conv_cfg=conv_cfg,
            norm_cfg=norm_cfg,
            act_cfg=act_cfg,
            norm_eval=norm_eval,
            ceil_mode=ceil_mode,
            **kwargs)
