"""Check a config before any training or testing starts.

A mistyped config should fail in seconds, with a message that names the
problem and the value that would fit, and before the Runner creates a work
directory or writes a log. :func:`check_config` builds the data sets lazily
(no image is read), builds the model and runs it on a dummy batch at the
input size the pipeline produces, and checks the checkpoint a run would
resume from or test. It writes nothing and restores the random state.
"""
import contextlib
import copy
import os
import os.path as osp
import random
import re
import zipfile
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.logging import print_log

# Transforms whose output size is fixed, and the argument that gives it.
SIZE_ARGS = {
    'RandomCrop': 'crop_size',
    'CenterCrop': 'crop_size',
    'RandomResizedCrop': 'scale',
    'EfficientNetRandomCrop': 'scale',
    'EfficientNetCenterCrop': 'crop_size',
    'Resize': 'scale',
}
CKPT_NAME = re.compile(r'^(epoch|iter)_(\d+)\.pth$')


class ConfigCheckError(ValueError):
    """A config, data set or checkpoint that cannot be used as given.

    Raised before the Runner starts, so nothing has been written.
    """


@contextlib.contextmanager
def _kept_random_state():
    """Leave the random generators as they were (the Runner seeds later)."""
    states = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])


def _clean(e: BaseException) -> str:
    """The message of a registry build error without mmengine's prefixes."""
    return re.sub(r'class `\w+` in [\w/.]+\.py: ', '', str(e)).strip()


# ----------------------------------------------------------------------------
# Data sets
# ----------------------------------------------------------------------------
def _pipeline_size(pipeline: Sequence) -> Optional[Tuple[int, int]]:
    """The (h, w) the last fixed-size transform of a pipeline produces."""
    size = None
    for t in pipeline or []:
        if not isinstance(t, dict) or t.get('type') not in SIZE_ARGS:
            continue
        value = t.get(SIZE_ARGS[t['type']])
        if isinstance(value, int):
            size = (value, value)
        elif isinstance(value, (tuple, list)) and len(value) == 2:
            # mmcv's Resize takes (w, h); the crops take (h, w).
            size = (value[1], value[0]) if t['type'] == 'Resize' else \
                tuple(value)
    return size


class _DataInfo:
    """What the checks learnt about one split's data set."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.num_classes: Optional[int] = None
        self.image_size: Optional[Tuple[int, int]] = None
        self.pipeline: List = []


def _first_image(folder: str, extensions: Tuple[str, ...]) -> Optional[str]:
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.is_file() and entry.name.lower().endswith(extensions):
            return entry.path
    return None


def _image_size(path: str) -> Optional[Tuple[int, int]]:
    try:
        from PIL import Image
        with Image.open(path) as img:
            return img.size[1], img.size[0]
    except Exception:
        return None


def _check_image_folders(ds, info: _DataInfo) -> None:
    """``CustomDataset`` without ``ann_file``: ``<root>/<class>/<image>``."""
    root = ds.img_prefix
    where = f'{info.where} (data_root={ds.data_root!r})'
    if not osp.isdir(root):
        parent = osp.dirname(osp.normpath(root))
        hint = ''
        if osp.isdir(parent):
            hint = (f' {parent} holds '
                    f'{sorted(os.listdir(parent))[:10]}; set data_root and '
                    'data_prefix so that they join to the split\'s folder.')
        raise ConfigCheckError(
            f'{where}: the image folder {root} does not exist.{hint}')
    extensions = tuple(ds.extensions)
    folders = sorted(e.name for e in os.scandir(root) if e.is_dir())
    if not folders:
        images = [
            e.name for e in os.scandir(root)
            if e.is_file() and e.name.lower().endswith(extensions)
        ]
        found = (f'{len(images)} images directly in it' if images else
                 'no class folders and no images')
        raise ConfigCheckError(
            f'{where}: {root} holds {found}, but CustomDataset without an '
            'ann_file reads one sub-folder per class: '
            f'{root}/<class name>/<image>. Put the images into one folder '
            'per class, or give an ann_file of "<path> <label>" lines.')
    empty = [f for f in folders
             if _first_image(osp.join(root, f), extensions) is None]
    if empty:
        raise ConfigCheckError(
            f'{where}: the class folders {empty[:5]} under {root} hold no '
            f'images with the extensions {sorted(extensions)}; remove them '
            'or fill them (every sub-folder of the split is a class).')
    classes = ds.metainfo.get('classes')
    if classes is not None and len(classes) != len(folders):
        raise ConfigCheckError(
            f'{where}: {len(folders)} class folders under {root} but the '
            f'data set names {len(classes)} classes; set classes to the '
            f'{len(folders)} folder names {folders[:10]} or fix the folders.')
    info.num_classes = len(folders)
    image = _first_image(osp.join(root, folders[0]), extensions)
    info.image_size = _image_size(image) if image else None


def _check_ann_file(ds, info: _DataInfo) -> None:
    where = f'{info.where} (data_root={ds.data_root!r})'
    if not osp.isfile(ds.ann_file):
        raise ConfigCheckError(
            f'{where}: the annotation file {ds.ann_file} does not exist.')
    if ds.img_prefix and not osp.isdir(ds.img_prefix):
        raise ConfigCheckError(
            f'{where}: the image folder {ds.img_prefix} does not exist.')
    classes = ds.metainfo.get('classes')
    if classes is not None:
        info.num_classes = len(classes)
    if getattr(ds, 'with_label', True):
        labels = []
        with open(ds.ann_file) as f:
            for line in f:
                parts = line.strip().rsplit(' ', 1)
                if len(parts) == 2 and parts[1].lstrip('-').isdigit():
                    labels.append(int(parts[1]))
        if labels:
            info.num_classes = max(info.num_classes or 0, max(labels) + 1)


def _check_cifar(ds, info: _DataInfo, distributed: bool) -> None:
    """mmpretrain's CIFAR family: files in ``<data_root>/<base_folder>``."""
    info.num_classes = len(ds.metainfo['classes'])
    info.image_size = (32, 32)
    if ds._check_integrity():
        return
    root = osp.abspath(ds.data_prefix['root'])
    if getattr(ds, 'download', False) and not distributed:
        # Download as mmpretrain would, or fail with the data set's message.
        try:
            ds.full_init()
            return
        except Exception as e:
            raise ConfigCheckError(f'{info.where}: {_clean(e)}') from e
    raise ConfigCheckError(
        f'{info.where}: no intact {ds.base_folder}/ under {root}. Put '
        f'{ds.filename} from {ds.url} there, extracted, or set data_root to '
        'where it is; several processes do not download it, so run once '
        'without the launcher (or download by hand) first.')


def _check_dataset(ds_cfg: dict, info: _DataInfo, distributed: bool) -> None:
    """Build one data set lazily and check what it will read."""
    from mmpretrain.datasets import CustomDataset
    from mmpretrain.registry import DATASETS
    if 'dataset' in ds_cfg:  # RepeatDataset, ClassBalancedDataset, ...
        _check_dataset(ds_cfg['dataset'], info, distributed)
        return
    if 'datasets' in ds_cfg:  # ConcatDataset
        counts = set()
        for sub in ds_cfg['datasets']:
            _check_dataset(sub, info, distributed)
            counts.add(info.num_classes)
        info.num_classes = max(counts) if None not in counts else None
        return
    info.pipeline = list(ds_cfg.get('pipeline', []))
    lazy = copy.deepcopy(dict(ds_cfg))
    lazy['lazy_init'] = True
    try:
        ds = DATASETS.build(lazy)
    except Exception as e:
        raise ConfigCheckError(
            f'{info.where} cannot be built: {type(e).__name__}: '
            f'{_clean(e)}') from e
    if isinstance(ds, CustomDataset):
        if ds.ann_file:
            _check_ann_file(ds, info)
        else:
            _check_image_folders(ds, info)
    elif hasattr(ds, '_check_integrity') and hasattr(ds, 'base_folder'):
        _check_cifar(ds, info, distributed)
    else:
        classes = ds.metainfo.get('classes')
        info.num_classes = len(classes) if classes else None


def _splits(cfg: Config, mode: str) -> List[str]:
    if mode == 'test':
        return ['test']
    splits = ['train']
    if cfg.get('val_cfg') and cfg.get('val_dataloader'):
        splits.append('val')
    return splits


def check_data(cfg: Config, mode: str = 'train',
               distributed: bool = False) -> Dict[str, _DataInfo]:
    """Check the data set of every split the run will read.

    Args:
        cfg (Config): The full config.
        mode (str): ``'train'`` (train and val splits) or ``'test'``.
        distributed (bool): Whether several processes will run.

    Returns:
        dict[str, _DataInfo]: Per split, the class count and input size.
    """
    infos = {}
    for split in _splits(cfg, mode):
        loader = cfg.get(f'{split}_dataloader')
        if not loader or 'dataset' not in loader:
            raise ConfigCheckError(
                f'The config has no {split}_dataloader.dataset, which '
                f'{mode} needs.')
        info = _DataInfo(f'{split}_dataloader.dataset')
        _check_dataset(loader['dataset'], info, distributed)
        info.image_size = _pipeline_size(info.pipeline) or info.image_size
        infos[split] = info
    return infos


# ----------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------
def _build_model(cfg: Config) -> nn.Module:
    from mmpretrain.registry import MODELS
    model_cfg = copy.deepcopy(cfg.model)
    if cfg.get('data_preprocessor') and 'data_preprocessor' not in model_cfg:
        model_cfg['data_preprocessor'] = copy.deepcopy(cfg.data_preprocessor)
    try:
        return MODELS.build(model_cfg)
    except Exception as e:
        raise ConfigCheckError(
            f'The model config cannot be built: {_clean(e)}') from e


def _check_classes(cfg: Config, model: nn.Module,
                   infos: Dict[str, _DataInfo]) -> None:
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


def _check_multi_branch(cfg: Config, model: nn.Module,
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


def _run_dummy(cfg: Config, model: nn.Module, infos: Dict[str, _DataInfo],
               mode: str, need_grads: bool) -> List[str]:
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


def _set_find_unused(cfg: Config, unused: List[str]) -> None:
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


# ----------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------
def checkpoint_problem(path: str) -> Optional[str]:
    """Why a checkpoint file cannot be loaded, or None if it is intact.

    A torch zip checkpoint is checked member by member against the CRCs in
    its directory, so a truncated or damaged file is found without
    unpickling it.

    Args:
        path (str): The checkpoint file.

    Returns:
        str | None: What is wrong, phrased to follow the file's name.
    """
    if not osp.isfile(path):
        return 'does not exist'
    if osp.getsize(path) == 0:
        return 'is empty'
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as zf:
                bad = zf.testzip()
                names = zf.namelist()
        except Exception as e:
            return f'is corrupt ({type(e).__name__}: {e})'
        if bad is not None:
            return f'is corrupt (its member {bad} fails its CRC check)'
        if not any(n.endswith('data.pkl') for n in names):
            return 'is a zip file but not a PyTorch checkpoint'
        return None
    try:
        torch.load(path, map_location='cpu', weights_only=False)
    except Exception as e:
        return (f'is truncated or not a PyTorch checkpoint '
                f'({type(e).__name__}: {e})')
    return None


def _checkpoints_in(folder: str) -> List[str]:
    """``epoch_N.pth`` / ``iter_N.pth`` in a folder, newest step first."""
    if not osp.isdir(folder):
        return []
    found = []
    for name in os.listdir(folder):
        m = CKPT_NAME.match(name)
        if m:
            found.append((int(m.group(2)), osp.join(folder, name)))
    return [p for _, p in sorted(found, reverse=True)]


def resolve_resume(cfg: Config, what: Optional[str] = None) -> Optional[str]:
    """Choose the checkpoint ``--resume`` continues from, or fail clearly.

    With ``resume=True`` and no ``load_from``, mmengine reads
    ``<work_dir>/last_checkpoint`` and fails on a file that a killed run left
    truncated. Here the newest intact checkpoint is taken instead (with a
    warning when that is not the one ``last_checkpoint`` names) and set as
    ``load_from``. An explicit ``load_from`` must be intact.

    Args:
        cfg (Config): The config; ``load_from`` may be set here.
        what (str, optional): How messages call ``load_from``. Defaults to
            ``'--resume'`` or ``'load_from'``.

    Returns:
        str | None: The checkpoint the run will load, if any.
    """
    load_from = cfg.get('load_from')
    if load_from:
        if '://' in load_from:
            return load_from
        problem = checkpoint_problem(load_from)
        if problem:
            what = what or ('--resume' if cfg.get('resume') else
                            'load_from')
            alt = [p for p in _checkpoints_in(osp.dirname(load_from) or '.')
                   if p != load_from and checkpoint_problem(p) is None]
            hint = f' The newest intact one beside it is {alt[0]}.' \
                if alt else ''
            raise ConfigCheckError(
                f'{what} {load_from} {problem}; pass a checkpoint written '
                f'completely by tools/train.py.{hint}')
        return load_from
    if not cfg.get('resume'):
        return None
    work_dir = cfg.get('work_dir')
    last_file = osp.join(work_dir, 'last_checkpoint')
    named = None
    if osp.isfile(last_file):
        with open(last_file) as f:
            named = f.read().strip() or None
    folders = [work_dir] + ([osp.dirname(named)] if named else [])
    candidates = []
    for folder in folders:
        candidates += [p for p in _checkpoints_in(folder)
                       if p not in candidates]
    if named and named not in candidates:
        candidates.insert(0, named)
    if not candidates:
        return None  # nothing to resume: a fresh start, as mmengine does
    rejected = []
    for path in candidates:
        problem = checkpoint_problem(path)
        if problem is None:
            break
        rejected.append(f'{path} {problem}')
    else:
        raise ConfigCheckError(
            f'--resume found no intact checkpoint in {work_dir}: '
            f'{"; ".join(rejected)}. Move these files away to start afresh, '
            'or pass --resume PATH to a good checkpoint.')
    if rejected or (named and path != named):
        print_log(
            f'Resuming from {path}, the newest intact checkpoint'
            + (f' ({"; ".join(rejected)})' if rejected else '')
            + (f'; last_checkpoint named {named}' if named else '') + '.',
            logger='current',
            level=30)
    cfg.load_from = path
    return path


def _check_checkpoint_fits(model: nn.Module, path: str) -> None:
    """Every weight the model has must be in the checkpoint, same shape.

    mmengine loads with ``strict=False`` and only warns, so a checkpoint of
    another config would otherwise be tested or resumed half random.
    """
    ckpt = torch.load(path, map_location='cpu', weights_only=False)
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise ConfigCheckError(f'{path} holds no state_dict; it is not a '
                               'model checkpoint written by tools/train.py.')
    state = {re.sub(r'^module\.', '', k): v for k, v in state.items()}
    wanted = model.state_dict()
    missing = [k for k in wanted if k not in state]
    wrong = [
        k for k in wanted if k in state and hasattr(state[k], 'shape')
        and tuple(state[k].shape) != tuple(wanted[k].shape)
    ]
    if missing or wrong:
        detail = []
        if missing:
            detail.append(f'{len(missing)} of the model\'s weights are '
                          f'missing, e.g. {missing[:3]}')
        if wrong:
            k = wrong[0]
            detail.append(f'{len(wrong)} have another shape, e.g. {k} is '
                          f'{tuple(state[k].shape)} in the checkpoint and '
                          f'{tuple(wanted[k].shape)} in the config')
        raise ConfigCheckError(
            f'{path} does not belong to this config: {"; ".join(detail)}. '
            'Pass the config the checkpoint was trained with.')


# ----------------------------------------------------------------------------
# Everything
# ----------------------------------------------------------------------------
def check_config(cfg: Config,
                 mode: str = 'train',
                 distributed: bool = False) -> Config:
    """Check a config before the Runner is built; raise on the first fault.

    Checks, in order: every data set the run reads (root, layout, class
    count, input size); the model builds; for MFMNeck/MultiBranchClsHead
    models, the stage count and channels against the neck and head, the
    students, and the sizes at the pipeline's input size against the
    neck's halving and the branch kernels; the head's class count against
    the data; one forward (and, when distributed, backward) pass on a dummy
    batch; the checkpoint to resume from or test. Where DDP would find
    parameters without gradient, ``find_unused_parameters`` is switched on.

    Args:
        cfg (Config): The config as the Runner will get it; ``load_from``
            and the DDP wrapper settings may be updated.
        mode (str): ``'train'`` or ``'test'``.
        distributed (bool): Whether several processes will run.

    Returns:
        Config: ``cfg``.

    Raises:
        ConfigCheckError: The first problem found, with the value that fits.
    """
    if mode not in ('train', 'test'):
        raise ValueError(f'mode={mode!r} is not train or test')
    with _kept_random_state():
        infos = check_data(cfg, mode, distributed)
        model = _build_model(cfg)
        _check_classes(cfg, model, infos)
        for info in infos.values():
            if info.image_size is None:
                info.image_size = (224, 224)
        sizes = list(dict.fromkeys(i.image_size for i in infos.values()))
        _check_multi_branch(cfg, model, sizes)
        unused = _run_dummy(cfg, model, infos, mode,
                            need_grads=distributed and mode == 'train')
        if distributed:
            _set_find_unused(cfg, unused)
        checkpoint = resolve_resume(
            cfg, what='The checkpoint' if mode == 'test' else None)
        if checkpoint and '://' not in checkpoint and (
                mode == 'test' or cfg.get('resume')):
            _check_checkpoint_fits(model, checkpoint)
    return cfg
