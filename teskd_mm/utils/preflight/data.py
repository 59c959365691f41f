"""Pre-flight checks of the data sets a run reads.

Each data set is built lazily (no image read): its root and layout are
checked, its class count and input size are noted.
"""
import contextlib
import copy
import os
import os.path as osp
from typing import Dict, List, Optional, Tuple

from mmengine.config import Config

from ..errors import ConfigCheckError
from ..errors import clean_message as _clean
from ..inputs import first_image, input_size


class DataInfo:
    """What the checks learnt about one split's data set.

    Args:
        where (str): The config key of the data set, for messages.
    """

    def __init__(self, where: str) -> None:
        self.where = where
        self.num_classes: Optional[int] = None
        self.image_size: Optional[Tuple[int, int]] = None


def _check_image_folders(ds, info: DataInfo) -> None:
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
             if first_image(osp.join(root, f), extensions) is None]
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


def _check_ann_file(ds, info: DataInfo) -> None:
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


def _check_cifar(ds, info: DataInfo, distributed: bool) -> None:
    """mmpretrain's CIFAR family: files in ``<data_root>/<base_folder>``."""
    info.num_classes = len(ds.metainfo['classes'])
    if ds._check_integrity():
        return
    root = osp.abspath(ds.data_prefix['root'])
    if getattr(ds, 'download', False) and not distributed:
        # Download as mmpretrain would, or fail with the data set's message.
        created = []  # the folders a download would create, deepest first
        folder = root
        while not osp.exists(folder):
            created.append(folder)
            folder = osp.dirname(folder)
        try:
            ds.full_init()
            return
        except Exception as e:
            # Leave no empty folder from the failed download behind.
            with contextlib.suppress(OSError):
                for folder in created:
                    os.rmdir(folder)
            raise ConfigCheckError(f'{info.where}: {_clean(e)}') from e
    raise ConfigCheckError(
        f'{info.where}: no intact {ds.base_folder}/ under {root}. Put '
        f'{ds.filename} from {ds.url} there, extracted, or set data_root to '
        'where it is; several processes do not download it, so run once '
        'without the launcher (or download by hand) first.')


def _check_dataset(ds_cfg: dict, info: DataInfo, distributed: bool) -> None:
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
    lazy = copy.deepcopy(dict(ds_cfg))
    lazy['lazy_init'] = True
    try:
        try:
            ds = DATASETS.build(lazy)
        except TypeError as e:
            if 'lazy_init' not in str(e):
                raise
            # A data set type without lazy loading: build it in full.
            ds = DATASETS.build(copy.deepcopy(dict(ds_cfg)))
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
               distributed: bool = False) -> Dict[str, DataInfo]:
    """Check the data set of every split the run will read.

    Args:
        cfg (Config): The full config.
        mode (str): ``'train'`` (train and val splits) or ``'test'``.
        distributed (bool): Whether several processes will run.

    Returns:
        dict[str, DataInfo]: Per split, the class count and input size.
    """
    infos = {}
    for split in _splits(cfg, mode):
        loader = cfg.get(f'{split}_dataloader')
        if not loader or 'dataset' not in loader:
            raise ConfigCheckError(
                f'The config has no {split}_dataloader.dataset, which '
                f'{mode} needs.')
        info = DataInfo(f'{split}_dataloader.dataset')
        _check_dataset(loader['dataset'], info, distributed)
        info.image_size = input_size(cfg, split)
        infos[split] = info
    return infos
