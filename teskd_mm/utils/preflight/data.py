"""Pre-flight checks of the data sets a run reads.

Each data set is built lazily: its root and layout are checked, and its
classes and input size noted. The splits must name the same classes in the
same order (a renamed or missing class folder would shift every label),
and the image files of image-folder data sets are checked by their headers
and end markers (an empty, truncated or non-image file is named before
training, not met in the middle of an epoch); their sizes are noted where
the pipeline does not fix one.
"""
import contextlib
import copy
import os
import os.path as osp
from typing import Dict, List, Optional, Tuple

from mmengine.config import Config
from PIL import Image

from mmpretrain.datasets import CustomDataset
from mmpretrain.registry import DATASETS

from ..errors import ConfigCheckError
from ..errors import clean_message as _clean
from ..inputs import first_image, fixed_input_size, input_size


class DataInfo:
    """What the checks learnt about one split's data set.

    Args:
        where (str): The config key of the data set, for messages.
    """

    def __init__(self, where: str) -> None:
        self.where = where
        self.num_classes: Optional[int] = None
        self.classes: Optional[Tuple[str, ...]] = None
        self.image_size: Optional[Tuple[int, int]] = None
        # Every size the split's images have, where the pipeline keeps it.
        self.image_sizes: List[Tuple[int, int]] = []
        self.dataset = None  # the built data set, for the image scan


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
    info.classes = tuple(classes) if classes is not None else tuple(folders)
    info.dataset = ds


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
    info.dataset = ds
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
    if info.classes is None and ds.metainfo.get('classes'):
        info.classes = tuple(ds.metainfo['classes'])


# How each format ends, where a truncated file would not.
END_MARKERS = {'JPEG': b'\xff\xd9', 'PNG': b'IEND\xaeB`\x82'}


def image_problem(path: str) -> Tuple[Optional[str], Optional[Tuple[int,
                                                                    int]]]:
    """Why an image file cannot be read, or None; and its (h, w).

    Only the header and the last bytes are read: an empty file, a file that
    is no image PIL knows, and a JPEG or PNG cut short (no end marker) are
    found without decoding.
    """
    try:
        if osp.getsize(path) == 0:
            return 'is empty (0 bytes)', None
        with Image.open(path) as img:
            size, kind = (img.size[1], img.size[0]), img.format
    except Exception as e:
        return f'is not an image ({type(e).__name__}: {e})', None
    marker = END_MARKERS.get(kind)
    if marker:
        with open(path, 'rb') as f:
            f.seek(-len(marker), os.SEEK_END)
            # Some writers pad after the marker; a cut file lacks it.
            f.seek(max(0, f.tell() - 64))
            if marker not in f.read():
                return f'is truncated (its {kind} end marker is missing)', \
                    size
    return None, size


def scan_images(info: DataInfo, keep_sizes: bool) -> None:
    """Check every image file of an image-folder data set.

    Args:
        info (DataInfo): The split; its data set is read in full (the file
            list, not the images).
        keep_sizes (bool): Note the distinct image sizes.
    """
    ds = info.dataset
    if ds is None:
        return
    try:
        ds.full_init()
    except Exception as e:
        raise ConfigCheckError(
            f'{info.where} cannot list its images: {type(e).__name__}: '
            f'{_clean(e)}') from e
    bad, sizes = [], {}
    for i in range(len(ds)):
        path = ds.get_data_info(i).get('img_path')
        if not path:
            continue
        problem, size = image_problem(path)
        if problem:
            bad.append(f'{path} {problem}')
        elif keep_sizes:
            sizes.setdefault(size, path)
    if bad:
        raise ConfigCheckError(
            f'{info.where}: {len(bad)} of its {len(ds)} images cannot be '
            f'read: {"; ".join(bad[:5])}{"; ..." if len(bad) > 5 else ""}. '
            'Remove or replace them before training.')
    if len(sizes) > 1:
        # mmpretrain's data preprocessor pads a batch to its largest image
        # with zeros: every image's result would depend on its batch.
        shown = '; '.join(f'{h}x{w}: {p}'
                          for (h, w), p in sorted(sizes.items())[:4])
        raise ConfigCheckError(
            f'{info.where}: its images differ in size ({len(sizes)} sizes, '
            f'e.g. {shown}) and its pipeline keeps each image\'s size, so '
            'batches would be padded with zeros to their largest image and '
            'the results would change with the batch size. Add a resize to '
            'the pipeline (e.g. dict(type=\'Resize\', scale=(32, 32)), or '
            'ResizeEdge and CenterCrop as the ImageNet configs do), or make '
            'the images one size.')
    info.image_sizes = sorted(sizes)


def check_same_classes(infos: Dict[str, DataInfo],
                       trained: Optional[Tuple[str, ...]] = None,
                       trained_where: str = 'the training set') -> None:
    """Every split names the training classes, in the training order.

    Args:
        infos (dict[str, DataInfo]): The splits checked.
        trained (tuple[str], optional): The training classes; defaults to
            the train split's.
        trained_where (str): How messages call them.
    """
    if trained is None and 'train' in infos:
        trained = infos['train'].classes
    if not trained:
        return
    trained = tuple(trained)
    for split, info in infos.items():
        if info.classes is None or split == 'train' and \
                trained_where == 'the training set':
            continue
        got = tuple(info.classes)
        if got == trained:
            continue
        missing = [c for c in trained if c not in got]
        unknown = [c for c in got if c not in trained]
        if missing or unknown:
            what = '; '.join(
                part for part in (
                    f'it lacks {missing[:5]}' if missing else '',
                    f'it has {unknown[:5]}, which {trained_where} has not'
                    if unknown else '') if part)
        else:
            first = next(i for i, (a, b) in enumerate(zip(got, trained))
                         if a != b)
            what = (f'the same names in another order ({got[first]!r} is '
                    f'label {first} here, {trained[first]!r} there)')
        raise ConfigCheckError(
            f'{info.where} does not name the classes of {trained_where}: '
            f'{what}. Its labels would be scored against other classes; '
            'give every split the same class folders (or the same '
            '`classes`).')


def _splits(cfg: Config, mode: str) -> List[str]:
    if mode == 'test':
        return ['test']
    splits = ['train']
    # mmpretrain's val_cfg is an empty dict: present, not None, is what counts.
    if cfg.get('val_cfg') is not None and cfg.get('val_dataloader'):
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
        dict[str, DataInfo]: Per split, the classes and input sizes.
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
        scan_images(info, keep_sizes=fixed_input_size(cfg, split) is None)
        infos[split] = info
    if mode == 'train':
        check_same_classes(infos)
    return infos
