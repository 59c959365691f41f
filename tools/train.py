"""Train a model from a config with mmengine's Runner.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp]
    torchrun --nproc_per_node=N tools/train.py CONFIG --launcher pytorch
"""
import argparse
import os
import sys

# First: the package quiets the known library warnings before they print.
from teskd_mm.apis.runs import RunError, train  # isort: skip
from mmengine.config import Config, DictAction

from teskd_mm.utils import ConfigCheckError
from teskd_mm.utils.cli import add_trust_checkpoint, trust_if_asked
from teskd_mm.utils.work_dir import default_work_dir


def parse_args():
    parser = argparse.ArgumentParser(description='Train a classifier')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume from the given checkpoint, or from the latest one in '
        'the work dir when no path is given')
    parser.add_argument(
        '--force',
        action='store_true',
        help='start a new run in a work dir that holds an earlier run\'s '
        'checkpoints, moving them into superseded_<time>/ first')
    parser.add_argument(
        '--amp', action='store_true', help='automatic mixed precision')
    parser.add_argument(
        '--skip-nonfinite',
        action='store_true',
        help='skip training steps whose loss is NaN or infinite (counted '
        'in the log) instead of stopping')
    parser.add_argument(
        '--no-validate',
        action='store_true',
        help='do not evaluate checkpoints during training')
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='scale the learning rate with the total batch size')
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
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def merge_args(cfg: Config, args) -> Config:
    """Fold the command-line options into the config."""
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = default_work_dir(args.config)
    if args.amp:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    if args.no_validate:
        cfg.val_cfg = None
        cfg.val_dataloader = None
        cfg.val_evaluator = None
    if args.auto_scale_lr:
        cfg.auto_scale_lr.enable = True
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    cfg.launcher = args.launcher
    if args.skip_nonfinite:
        hooks = [
            h for h in cfg.get('custom_hooks') or []
            if h.get('type') == 'NonFiniteLossHook'
        ]
        if not hooks:
            sys.exit('train.py: error: --skip-nonfinite sets the action of '
                     'the config\'s NonFiniteLossHook, and the config '
                     'declares none; add dict(type=\'NonFiniteLossHook\') '
                     'to its custom_hooks (configs/_base_/default_runtime.py '
                     'has it).')
        for hook in hooks:
            hook['action'] = 'skip'
    return cfg


def main():
    args = parse_args()
    cfg = merge_args(Config.fromfile(args.config), args)
    if args.trust_checkpoint and not cfg.get('load_from'):
        sys.exit('train.py: error: --trust-checkpoint trusts the checkpoint '
                 'named on the command line, and none is: give --resume '
                 'PATH or --cfg-options load_from=PATH.')
    trust_if_asked(args, cfg.get('load_from'))
    try:
        train(cfg, force=args.force)
    except (ConfigCheckError, RunError) as e:
        sys.exit(f'train.py: error: {e}')


if __name__ == '__main__':
    main()
