"""Images per second of a config's data loader.

    python tools/analysis/data_loading.py CONFIG [--split train]
        [--batches 30] [--warmup 2] [--num-workers N] [--batch-size N]
        [--cfg-options KEY=VALUE ...]

The loader is built as the Runner builds it: the config's data set, its
pipeline, sampler and ``num_workers``. The first ``--warmup`` batches (the
workers' start) are not timed; the images of the next ``--batches`` batches
are counted over the time they took. Compare the figure with the training
step's images per second (``tools/benchmark.py``): where the loader is the
slower, raise ``num_workers``.

Exit status 2, with one line naming the problem, when the config's data are
missing or too few for the batches asked for.
"""
import argparse
import contextlib
import copy
import os
import os.path as osp
import sys
import time
from typing import List, Optional

from mmengine.config import DictAction

PROG = 'data_loading.py'


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse and check the command line."""
    parser = argparse.ArgumentParser(
        prog=PROG, description='Time the data loader of a config')
    parser.add_argument('config', help='the config whose loader to time')
    parser.add_argument('--split', default='train',
                        choices=('train', 'val', 'test'),
                        help='the loader to time: <split>_dataloader')
    parser.add_argument('--batches', type=int, default=30,
                        help='timed batches (after the warm-up)')
    parser.add_argument('--warmup', type=int, default=2,
                        help='untimed batches first, while the workers start')
    parser.add_argument('--num-workers', type=int,
                        help='worker processes (default: the config\'s)')
    parser.add_argument('--batch-size', type=int,
                        help='images per batch (default: the config\'s)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of the config, as '
                        'key=value pairs')
    args = parser.parse_args(argv)
    for name, low in (('batches', 1), ('warmup', 0), ('num_workers', 0),
                      ('batch_size', 1)):
        value = getattr(args, name)
        if value is not None and value < low:
            parser.error(f'--{name.replace("_", "-")} must be at least '
                         f'{low}, got {value}')
    return args


def _fail(message: str) -> int:
    """Print ``message`` as one line and return the exit status 2."""
    print(f'{PROG}: error: ' + ' '.join(str(message).split()),
          file=sys.stderr)
    return 2


def absent_folders(path: Optional[str]) -> List[str]:
    """The folders of ``path`` that do not exist yet, deepest first."""
    absent, path = [], osp.abspath(path) if path else None
    while path and not osp.exists(path):
        absent.append(path)
        path = osp.dirname(path)
    return absent


def images_per_second(loader, batches: int, warmup: int) -> float:
    """Images per second of ``loader`` over ``batches`` batches.

    Args:
        loader (Iterable): A data loader with at least ``warmup + batches``
            batches in one pass.
        batches (int): Batches to time.
        warmup (int): Batches to take first, untimed.

    Returns:
        float: Images in the timed batches over the time they took.
    """
    it = iter(loader)
    for _ in range(warmup):
        next(it)
    images, start = 0, time.perf_counter()
    for _ in range(batches):
        batch = next(it)
        # mmengine's pseudo_collate: a dict with a list of images.
        inputs = batch['inputs'] if isinstance(batch, dict) else batch[0]
        images += len(inputs)
    return images / (time.perf_counter() - start)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    from teskd_mm.utils import prepare_cfg
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner

    from mmpretrain.registry import DATASETS
    from teskd_mm.utils.errors import clean_message

    if not osp.isfile(args.config):
        return _fail(f'config {args.config} does not exist')
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    key = f'{args.split}_dataloader'
    if not cfg.get(key) or 'dataset' not in cfg[key]:
        return _fail(f'the config has no {key}.dataset')
    if args.num_workers is not None:
        cfg[key]['num_workers'] = args.num_workers
    if args.batch_size is not None:
        cfg[key]['batch_size'] = args.batch_size
    # prepare_cfg drops persistent_workers where there are no workers.
    loader_cfg = copy.deepcopy(prepare_cfg(cfg)[key].to_dict())
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    dataset_cfg = loader_cfg.pop('dataset')
    absent = absent_folders(dataset_cfg.get('data_root'))
    try:
        dataset = DATASETS.build(dataset_cfg)
    except Exception as e:  # any data set's own "not found" error
        # A failed download (CIFAR) leaves its empty folders behind.
        for folder in absent:
            with contextlib.suppress(OSError):
                os.rmdir(folder)
        root = dataset_cfg.get('data_root')
        where = f' (data_root {root!r} is relative to {os.getcwd()})' \
            if isinstance(root, str) and not osp.isabs(root) else ''
        return _fail(f'{key}.dataset cannot be built: {type(e).__name__}: '
                     f'{clean_message(e)}{where}')
    loader = Runner.build_dataloader(dict(loader_cfg, dataset=dataset),
                                     seed=0)
    need = args.warmup + args.batches
    if len(loader) < need:
        return _fail(
            f'{key} gives {len(loader)} batches of {loader.batch_size} from '
            f'{len(dataset)} images, fewer than the {need} asked for '
            f'({args.warmup} warm-up + {args.batches} timed); lower '
            '--batches, --warmup or --batch-size')
    rate = images_per_second(loader, args.batches, args.warmup)
    pipeline = [t.get('type', '?') for t in
                (cfg[key]['dataset'].get('pipeline') or [])]
    print(f'{key} of {args.config}: {type(dataset).__name__} of '
          f'{len(dataset)} images, batch {loader.batch_size}, '
          f'{loader.num_workers} workers, pipeline {", ".join(pipeline)}')
    print(f'{rate:.1f} images/s over {args.batches} batches after '
          f'{args.warmup} warm-up')
    return 0


if __name__ == '__main__':
    sys.exit(main())
