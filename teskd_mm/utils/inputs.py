"""The input size a config feeds its model, and a batch of that size.

One rule for every place that needs it: the pre-flight checks, the
benchmark and the tests.
"""
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.config import Config
from PIL import Image

from mmpretrain.structures import DataSample

# Transforms whose output size is fixed, and the argument that gives it.
SIZE_ARGS = {
    'RandomCrop': 'crop_size',
    'CenterCrop': 'crop_size',
    'RandomResizedCrop': 'scale',
    'EfficientNetRandomCrop': 'scale',
    'EfficientNetCenterCrop': 'crop_size',
    'Resize': 'scale',
}
# Data sets whose images all have one size, by the name's start.
NATIVE_SIZES = {'CIFAR': (32, 32), 'CheckedCIFAR': (32, 32), 'MNIST': (28, 28),
                'FashionMNIST': (28, 28)}
DEFAULT_SIZE = (224, 224)
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.tif',
                    '.tiff', '.webp')


def pipeline_size(pipeline: Sequence) -> Optional[Tuple[int, int]]:
    """The (h, w) the last fixed-size transform of a pipeline produces."""
    size = None
    for t in pipeline or []:
        if not isinstance(t, dict) or t.get('type') not in SIZE_ARGS:
            continue
        value = t.get(SIZE_ARGS[t['type']])
        if isinstance(value, int):
            size = (value, value)
        elif isinstance(value, (tuple, list)) and len(value) == 2 and \
                all(isinstance(v, int) and v > 0 for v in value):
            # mmcv's Resize takes (w, h); the crops take (h, w).
            size = (value[1], value[0]) if t['type'] == 'Resize' else \
                tuple(value)
    return size


def first_image(folder: str,
                extensions: Sequence[str] = IMAGE_EXTENSIONS) -> Optional[str]:
    """The first image (by name) in a folder or its first sub-folder."""
    if not osp.isdir(folder):
        return None
    entries = sorted(os.scandir(folder), key=lambda e: e.name)
    for entry in entries:
        if entry.is_file() and entry.name.lower().endswith(tuple(extensions)):
            return entry.path
    for entry in entries:
        if entry.is_dir():
            found = first_image(entry.path, extensions)
            if found:
                return found
    return None


def image_size(path: str) -> Optional[Tuple[int, int]]:
    """The (h, w) of an image file, read from its header; None if unreadable."""
    try:
        with Image.open(path) as img:
            return img.size[1], img.size[0]
    except Exception:
        return None


def _innermost(dataset: dict) -> dict:
    """The data set inside wrappers (RepeatDataset, ConcatDataset, ...)."""
    while isinstance(dataset, dict):
        if 'dataset' in dataset:
            dataset = dataset['dataset']
        elif dataset.get('datasets'):
            dataset = dataset['datasets'][0]
        else:
            break
    return dataset


def _folder_of(dataset: dict) -> Optional[str]:
    root = dataset.get('data_root') or ''
    prefix = dataset.get('data_prefix') or ''
    if isinstance(prefix, dict):
        prefix = prefix.get('img_path', prefix.get('img', '')) or ''
    if not (root or prefix) or dataset.get('ann_file'):
        return None
    return osp.join(root, prefix)


def fixed_input_size(cfg: Config,
                     split: str = 'train') -> Optional[Tuple[int, int]]:
    """The (h, w) a split's pipeline crops or resizes to, if it does."""
    loader = cfg.get(f'{split}_dataloader') or {}
    return pipeline_size(
        _innermost(loader.get('dataset') or {}).get('pipeline'))


def input_size(cfg: Config, split: str = 'train') -> Tuple[int, int]:
    """The (h, w) of the images a split's pipeline gives the model.

    In order: the last fixed-size transform of the split's pipeline (a crop
    or resize); else the one size of the data set type (32 for CIFAR); else
    the size of the first image of an image-folder data set, where it
    exists; else 224.

    Args:
        cfg (Config): The full config.
        split (str): ``'train'``, ``'val'`` or ``'test'``.
    """
    size = fixed_input_size(cfg, split)
    if size:
        return size
    loader = cfg.get(f'{split}_dataloader') or {}
    dataset = _innermost(loader.get('dataset') or {})
    kind = str(dataset.get('type', ''))
    for name, native in NATIVE_SIZES.items():
        if kind.startswith(name):
            return native
    folder = _folder_of(dataset)
    image = first_image(folder) if folder else None
    return (image_size(image) if image else None) or DEFAULT_SIZE


def in_channels(cfg: Config) -> int:
    """The channels of the model's input images."""
    return int(cfg.model.get('backbone', {}).get('in_channels', 3))


def dummy_batch(cfg: Config,
                split: str = 'train',
                batch_size: int = 2,
                size: Optional[Tuple[int, int]] = None,
                num_classes: Optional[int] = None) -> Dict[str, List]:
    """A batch as the split's data loader would give it, of random pixels.

    Args:
        cfg (Config): The full config.
        split (str): The split whose input size to use.
        batch_size (int): Number of images.
        size (tuple[int, int], optional): (h, w); defaults to
            :func:`input_size`.
        num_classes (int, optional): Labels cycle over this many classes;
            defaults to the head's ``num_classes``.

    Returns:
        dict: ``inputs`` (uint8 ``(C, H, W)`` images) and ``data_samples``
        (with ``gt_label``, ``sample_idx`` and ``img_shape``), for the
        model's ``data_preprocessor``.
    """
    size = tuple(size or input_size(cfg, split))
    num_classes = num_classes or cfg.model.get('head', {}).get(
        'num_classes', 2)
    inputs = [
        torch.randint(0, 256, (in_channels(cfg), *size), dtype=torch.uint8)
        for _ in range(batch_size)
    ]
    samples = [
        DataSample(metainfo=dict(sample_idx=i, img_shape=size,
                                 ori_shape=size)).set_gt_label(
                                     i % max(1, int(num_classes)))
        for i in range(batch_size)
    ]
    return dict(inputs=inputs, data_samples=samples)
