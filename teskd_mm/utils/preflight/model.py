"""Pre-flight checks of the model against the data and its input.

The model is built and run on a dummy batch at each split's input size,
through its data preprocessor. Its components check their own inputs
(stage count, channels, students, sizes) and their messages are the ones
shown; this adds only what they cannot know: the input size the pipeline
gives, and, when the sizes do not fit, the backbone's total stride and
the input sizes that would.
"""
import copy
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.logging import print_log

from mmpretrain.registry import MODELS

from ...models.heads import SelfKDHead
from ...models.necks import MFMNeck
from ..errors import ConfigCheckError
from ..errors import clean_message as _clean
from ..inputs import dummy_batch, in_channels
from .data import DataInfo


def build_model(cfg: Config) -> nn.Module:
    """Build ``cfg.model`` (with the top-level data preprocessor)."""
    model_cfg = copy.deepcopy(cfg.model)
    if cfg.get('data_preprocessor') and 'data_preprocessor' not in model_cfg:
        model_cfg['data_preprocessor'] = copy.deepcopy(cfg.data_preprocessor)
    try:
        return MODELS.build(model_cfg)
    except Exception as e:
        raise ConfigCheckError(
            f'The model config cannot be built: {_clean(e)}') from e


def check_classes(model: nn.Module, infos: Dict[str, DataInfo]) -> None:
    """The head's and the batch augments' class counts against the data."""
    num_classes = getattr(getattr(model, 'head', None), 'num_classes', None)
    if num_classes is not None:
        for info in infos.values():
            if info.num_classes not in (None, num_classes):
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


def _total_stride(model: nn.Module, channels: int) -> Optional[int]:
    """The backbone's total stride: input size over its last output's."""
    side = 512
    model.eval()
    try:
        with torch.no_grad():
            outs = model.backbone(torch.zeros(1, channels, side, side))
    except Exception:
        return None
    last = outs[-1] if isinstance(outs, (tuple, list)) else outs
    if last.dim() != 4 or last.shape[-1] == 0:
        return None
    return max(1, round(side / last.shape[-1]))


def _run(model: nn.Module, batch: dict, train: bool,
         need_grads: bool) -> List[str]:
    """One pass; with ``need_grads``, the parameters left without grad."""
    model.train(train)
    if not train:
        with torch.no_grad():
            model.test_step(batch)
        return []
    data = model.data_preprocessor(batch, True)
    losses = model(**data, mode='loss')
    loss, _ = model.parse_losses(losses)
    if not need_grads:
        return []
    model.zero_grad(set_to_none=True)
    loss.backward()
    unused = [
        n for n, p in model.named_parameters()
        if p.requires_grad and p.grad is None
    ]
    model.zero_grad(set_to_none=True)
    return unused


def _sizes_that_fit(cfg: Config, model: nn.Module, split: str,
                    size: Tuple[int, int], stride: int) -> List[str]:
    """Multiples of the total stride on either side of ``size`` that run."""
    good = []
    for k in (size[0] // stride, size[0] // stride + 1):
        h = w = max(1, k) * stride
        if (h, w) == tuple(size):
            continue
        try:
            _run(model, dummy_batch(cfg, split, size=(h, w)),
                 split == 'train', need_grads=False)
            good.append(f'{h}x{w}')
        except Exception:
            continue
    return good


def run_dummy_batch(cfg: Config, model: nn.Module,
                    infos: Dict[str, DataInfo],
                    need_grads: bool) -> List[str]:
    """Run the model on a dummy batch per split; return parameters that get
    no gradient (with ``need_grads``, for DDP's ``find_unused_parameters``).
    """
    unused = []
    for split, info in infos.items():
        # The pipeline's size, and every other size its images keep.
        sizes = [info.image_size] + [
            s for s in info.image_sizes if s != info.image_size
        ][:8]
        for size in sizes:
            found = _run_split(cfg, model, split, info, size, need_grads)
            unused = unused or found
    return unused


def _run_split(cfg: Config, model: nn.Module, split: str, info: DataInfo,
               size: Tuple[int, int], need_grads: bool) -> List[str]:
    """One pass at one input size, its failure explained."""
    batch = dummy_batch(cfg, split, size=size)
    where = (f'The model fails on a batch of 2 images of '
             f'{size[0]}x{size[1]} (a size {info.where} gives)')
    try:
        return _run(model, batch, split == 'train', need_grads)
    except Exception as e:
        # The components' own checks raise ValueError with a message meant
        # for users; anything else is named by its type.
        kind = '' if isinstance(e, ValueError) else f'{type(e).__name__}: '
        message = f'{where}: {kind}{_clean(e)}'
        stride = _total_stride(model, in_channels(cfg))
        if stride and (size[0] % stride or size[1] % stride):
            fits = _sizes_that_fit(cfg, model, split, size, stride)
            message += (
                f' The backbone\'s total stride is {stride}; input sizes '
                f'that fit: {", ".join(fits) or "none near it"}.')
        raise ConfigCheckError(message) from e


def check_teacher_stage(cfg: Config, model: nn.Module) -> None:
    """The neck's last input must be the backbone's last output.

    The teacher is backbone -> pool -> Linear on the last output the
    backbone gives; where ``out_indices`` stop before the backbone's own
    last output (its default, the one a stock head reads), the teacher
    trained and deployed is a truncated network, without a word.
    """

    if not isinstance(getattr(model, 'neck', None), MFMNeck):
        return
    backbone_cfg = copy.deepcopy(dict(cfg.model.backbone))
    given = backbone_cfg.pop('out_indices', None)
    if not isinstance(given, (tuple, list)) or not given:
        return
    try:
        default = MODELS.build(backbone_cfg).out_indices
    except Exception:
        return  # a backbone without a default: nothing to compare with
    default = [i for i in (default if isinstance(default, (tuple, list))
                           else (default, ))]
    if min(list(given) + default) < 0:
        return  # negative indices count from an end this does not know
    if max(given) < max(default):
        raise ConfigCheckError(
            f'The backbone\'s out_indices={tuple(given)} end at output '
            f'{max(given)}, but the backbone itself ends at output '
            f'{max(default)} (its default out_indices, the output a stock '
            'head reads): the teacher, which classifies the last output, '
            f'would be the backbone cut after output {max(given)}, and so '
            f'would the deployed model. Make {max(default)} the last of '
            'out_indices (tools/teskd_config.py picks the four outputs).')


def check_training_data(cfg: Config, model: nn.Module,
                        infos: Dict[str, DataInfo]) -> None:
    """The head's own checks of the training data (the DTSKD memory's: one
    row per image, a ``sample_idx`` unique in the set)."""
    head = getattr(model, 'head', None)
    if not isinstance(head, SelfKDHead):
        return
    info = infos.get('train')
    images = len(info.dataset) if info and info.dataset is not None else 0
    try:
        head.check_training_data(cfg.train_dataloader.get('dataset') or {},
                                 images)
    except ValueError as e:
        raise ConfigCheckError(str(e)) from None


def set_find_unused(cfg: Config, unused: List[str]) -> None:
    """Switch on DDP's ``find_unused_parameters`` where it is needed."""
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
