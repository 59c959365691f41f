"""Pre-flight checks of the model against itself, the data and its input.

The model is built and run on a dummy batch at the pipeline's input size;
for TESKD's MFMNeck and MultiBranchClsHead, the stage count, channels,
students and spatial sizes are checked first, each with the value that
would fit.
"""
import copy
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.logging import print_log

from .data import DataInfo
from .errors import ConfigCheckError
from .errors import clean_message as _clean


def build_model(cfg: Config) -> nn.Module:
    from mmpretrain.registry import MODELS
    model_cfg = copy.deepcopy(cfg.model)
    if cfg.get('data_preprocessor') and 'data_preprocessor' not in model_cfg:
        model_cfg['data_preprocessor'] = copy.deepcopy(cfg.data_preprocessor)
    try:
        return MODELS.build(model_cfg)
    except Exception as e:
        raise ConfigCheckError(
            f'The model config cannot be built: {_clean(e)}') from e


def check_classes(cfg: Config, model: nn.Module,
                  infos: Dict[str, DataInfo]) -> None:
    num_classes = getattr(getattr(model, 'head', None), 'num_classes', None)
    counts = {s: i for s, i in infos.items() if i.num_classes is not None}
    if num_classes is not None:
        for split, info in counts.items():
            if info.num_classes != num_classes:
                raise ConfigCheckError(
                    f'The head has num_classes={num_classes} but '
                    f'{info.where} has {info.num_classes} classes; set '
                    f'model.head.num_classes={info.num_classes} (and '
                    f'data_preprocessor num_classes={info.num_classes} '
                    'where batch augments use it).')
    preproc = getattr(model, 'data_preprocessor', None)
    batch_classes = getattr(preproc, 'num_classes', None)
    if num_classes is not None and batch_classes is not None and \
            getattr(preproc, 'batch_augments', None) is not None and \
            batch_classes != num_classes:
        raise ConfigCheckError(
            f'data_preprocessor num_classes={batch_classes} makes the batch '
            f'augments\' one-hot targets, but the head has num_classes='
            f'{num_classes}; set data_preprocessor num_classes={num_classes}.')


def _in_channels(cfg: Config) -> int:
    return int(cfg.model.get('backbone', {}).get('in_channels', 3))


def _stage_outputs(model: nn.Module, size: Tuple[int, int],
                   in_channels: int) -> Tuple[torch.Tensor, ...]:
    model.eval()
    with torch.no_grad():
        outs = model.backbone(torch.zeros(1, in_channels, *size))
    return tuple(outs) if isinstance(outs, (tuple, list)) else (outs, )


def _fitting_sizes(model, neck, head, size, outs,
                   in_channels) -> Tuple[int, List[str]]:
    """The backbone's total stride, and input sizes near ``size`` that fit.

    The stride is that of the first stage output times two per further
    stage; the multiples of it on either side of ``size`` are tried through
    the backbone, the neck and the head.
    """
    first = outs[0].shape[-2:]
    strides = [
        max(1, round(size[axis] / first[axis])) * 2**(len(outs) - 1)
        for axis in (0, 1)
    ]
    fits = []
    for axis, stride in enumerate(strides):
        low = max(stride, size[axis] // stride * stride)
        fits.append(sorted({low, low + stride}))
    good = []
    for h, w in zip(*fits):
        try:
            stages = _stage_outputs(model, (h, w), in_channels)
            neck._check_sizes(stages)
            if head is not None and hasattr(head, '_check_sizes'):
                with torch.no_grad():
                    head._check_sizes(neck(stages))
            good.append(f'{h}x{w}')
        except Exception:
            continue
    return max(strides), good


def check_multi_branch(cfg: Config, model: nn.Module,
                       sizes: Sequence[Tuple[int, int]]) -> None:
    """Stage count, channels, students and sizes of neck and head."""
    from teskd_mm.models.heads import MultiBranchClsHead
    from teskd_mm.models.necks import MFMNeck
    neck = getattr(model, 'neck', None)
    head = getattr(model, 'head', None)
    if not isinstance(neck, MFMNeck):
        return
    head = head if isinstance(head, MultiBranchClsHead) else None
    backbone_cfg = cfg.model.get('backbone', {})
    out_indices = backbone_cfg.get('out_indices')
    in_channels = _in_channels(cfg)
    L = neck.num_levels
    head_levels = cfg.model.get('head', {}).get('num_levels', 4)
    if head is not None and head_levels != L:
        raise ConfigCheckError(
            f'MFMNeck has {L} levels (in_channels={neck.in_channels}) but '
            f'MultiBranchClsHead num_levels={head_levels}; set the head\'s '
            f'num_levels={L}.')
    if head is not None and tuple(head.students) != tuple(neck.students):
        raise ConfigCheckError(
            f'The neck feeds students={tuple(neck.students)} but the head '
            f'has students={tuple(head.students)}; give both the same '
            'students.')

    size = sizes[0]
    outs = _stage_outputs(model, size, in_channels)
    if len(outs) != L or (isinstance(out_indices, (tuple, list)) and
                          list(out_indices) != sorted(out_indices)):
        stages = getattr(model.backbone, 'num_stages', None) or L
        fit = tuple(range(stages))
        more = '' if stages == L else (
            f' The backbone has {stages} stages: then also give the neck '
            f'{stages} in_channels and the head num_levels={stages}.')
        raise ConfigCheckError(
            f'The backbone gives {len(outs)} stage output(s) '
            f'(out_indices={out_indices}) but MFMNeck takes {L}, one per '
            f'stage, shallow to deep (in_channels={neck.in_channels}); set '
            f'model.backbone.out_indices={fit}.{more}')
    if any(o.dim() != 4 for o in outs):
        raise ConfigCheckError(
            'MFMNeck takes (N, C, H, W) maps but the backbone gives shapes '
            f'{[tuple(o.shape) for o in outs]}; configure the backbone to '
            'return unpooled stage maps (for ConvNeXt: '
            'gap_before_final_norm=False).')
    channels = tuple(int(o.shape[1]) for o in outs)
    if channels != tuple(neck.in_channels):
        raise ConfigCheckError(
            f'The backbone stages have {channels} channels but MFMNeck '
            f'in_channels={tuple(neck.in_channels)}; set model.neck.'
            f'in_channels={channels}.')
    if head is not None:
        if head.in_channels != channels[-1]:
            raise ConfigCheckError(
                f'The last stage has {channels[-1]} channels but '
                f'MultiBranchClsHead in_channels={head.in_channels}; set '
                f'model.head.in_channels={channels[-1]}.')
        branch_in = cfg.model.head.get('branch_in_channels') or \
            head.in_channels
        if type(head) is MultiBranchClsHead and \
                branch_in != neck.out_channels:
            raise ConfigCheckError(
                f'MFMNeck gives the students {neck.out_channels} channels '
                f'but the head\'s branches take {branch_in}; set '
                f'model.head.branch_in_channels={neck.out_channels} (or '
                'drop it and the neck\'s out_channels to use the last '
                'stage\'s width).')

    for size in sizes:
        outs = _stage_outputs(model, size, in_channels)
        shapes = ', '.join(f'{o.shape[-2]}x{o.shape[-1]}' for o in outs)
        where = (f'At the input size {size[0]}x{size[1]} (from the '
                 f'pipeline) the backbone stages are {shapes}')
        try:
            neck._check_sizes(outs)
            with torch.no_grad():
                fused = neck(outs)
        except ValueError as e:
            stride, fits = _fitting_sizes(model, neck, head, size, outs,
                                          in_channels)
            fits = ', '.join(fits) or 'none near this one'
            if type(neck)._check_sizes is MFMNeck._check_sizes:
                # The neck's own hint assumes a total stride of 32.
                raise ConfigCheckError(
                    f'{where}, but MFMNeck needs every stage at twice the '
                    'size of the next one. Use an input size that is a '
                    f'multiple of {stride}, the backbone\'s total stride: '
                    f'sizes that fit are {fits}.') from e
            raise ConfigCheckError(
                f'{where}: {e} Input sizes that fit: {fits}.') from e
        if head is None:
            continue
        try:
            head._check_sizes(fused)
        except ValueError as e:
            scale = getattr(head, 'branch_end_scale', 1)
            end = [scale * t for t in fused.teacher.shape[-2:]]
            fit = tuple(s.shape[-1] // end[1] for s in fused.students)
            exact = all(
                tuple(s.shape[-2:]) == (k * end[0], k * end[1])
                for s, k in zip(fused.students, fit))
            hint = (f' Set model.head.branch_kernels={fit}, or leave it '
                    'unset for the default.') if exact else ''
            raise ConfigCheckError(f'{where}: {e}{hint}') from e


def _dummy_batch(size: Tuple[int, int], in_channels: int, num_classes: int):
    from mmpretrain.structures import DataSample
    inputs = torch.randn(2, in_channels, *size)
    samples = [
        DataSample(metainfo=dict(sample_idx=i, img_shape=size)).set_gt_label(
            i % max(1, num_classes)) for i in range(2)
    ]
    return inputs, samples


def run_dummy_batch(cfg: Config, model: nn.Module,
                    infos: Dict[str, DataInfo], mode: str,
                    need_grads: bool) -> List[str]:
    """Run the model on a dummy batch; return parameters left without grad.

    Args:
        need_grads (bool): Also run the backward pass.
    """
    num_classes = getattr(getattr(model, 'head', None), 'num_classes', 2)
    in_channels = _in_channels(cfg)
    unused = []
    for split, info in infos.items():
        size = info.image_size
        inputs, samples = _dummy_batch(size, in_channels, num_classes)
        where = (f'The model fails on a batch of 2 images of '
                 f'{size[0]}x{size[1]} (the size {info.where}\'s pipeline '
                 'gives)')
        try:
            if split == 'train':
                model.train()
                losses = model(inputs, samples, mode='loss')
                loss, _ = model.parse_losses(losses)
                if need_grads:
                    model.zero_grad(set_to_none=True)
                    loss.backward()
                    unused = [
                        n for n, p in model.named_parameters()
                        if p.requires_grad and p.grad is None
                    ]
                    model.zero_grad(set_to_none=True)
            else:
                model.eval()
                with torch.no_grad():
                    model(inputs, samples, mode='predict')
        except Exception as e:
            raise ConfigCheckError(
                f'{where}: {type(e).__name__}: {_clean(e)}') from e
    return unused


def set_find_unused(cfg: Config, unused: List[str]) -> None:
    if not unused:
        return
    wrapper = cfg.get('model_wrapper_cfg')
    if wrapper is not None:
        wrapper['find_unused_parameters'] = True
    else:
        cfg.find_unused_parameters = True
    print_log(
        f'{len(unused)} parameters get no gradient from the loss (e.g. '
        f'{unused[:3]}); DistributedDataParallel runs with '
        'find_unused_parameters=True.',
        logger='current')
