"""Evaluate a checkpoint on the test set of a config.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out FILE]
    torchrun --nproc_per_node=N tools/test.py CONFIG CKPT --launcher pytorch
"""
import argparse
import os
import os.path as osp
import sys

# First: the package quiets the known library warnings before they print.
from teskd_mm.apis.runs import test  # isort: skip
from mmengine.config import Config, DictAction

from teskd_mm.utils import ConfigCheckError
from teskd_mm.utils.cli import (add_trust_checkpoint, check_output,
                                trust_if_asked)
from teskd_mm.utils.work_dir import default_work_dir


# What mmengine.fileio.dump writes, by extension.
OUT_FORMATS = ('.json', '.yaml', '.yml', '.pkl', '.pickle')


def parse_args():
    parser = argparse.ArgumentParser(description='Test a classifier')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the dir to save the results')
    parser.add_argument(
        '--out', help='dump the metrics to this file (.json, .yaml or .pkl)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config, as key=value pairs')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    add_trust_checkpoint(parser)
    args = parser.parse_args()
    if args.out and osp.splitext(args.out)[1].lower() not in OUT_FORMATS:
        parser.error(f'--out {args.out}: the format is taken from the '
                     f'extension, which must be one of {OUT_FORMATS}')
    check_output(parser, '--out', args.out)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args, parser


def main():
    args, parser = parse_args()
    cfg = Config.fromfile(args.config)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = default_work_dir(args.config)
    check_output(parser, 'The work dir', cfg.work_dir, folder=True)
    cfg.launcher = args.launcher
    trust_if_asked(args, args.checkpoint)
    try:
        return test(cfg, args.checkpoint, out=args.out)
    except ConfigCheckError as e:
        sys.exit(f'test.py: error: {e}')


if __name__ == '__main__':
    main()
