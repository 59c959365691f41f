"""Train a model from a config with mmengine's Runner.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp]
    torchrun --nproc_per_node=N tools/train.py CONFIG --launcher pytorch
"""
import argparse
import os
import sys

import torch.distributed as torch_dist
from mmengine.config import Config, DictAction
from mmengine.runner import Runner

from teskd_mm.utils import (ConfigCheckError, check_config,
                            close_distributed, init_cpu_distributed,
                            launch_rank, missing_reliability_hooks,
                            prepare_cfg, setup_runtime)
from teskd_mm.utils.checkpoint import last_checkpoint
from teskd_mm.utils.cli import add_trust_checkpoint, trust_if_asked
from teskd_mm.utils.work_dir import (claim_work_dir, default_work_dir,
                                     release)


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


def claim(cfg: Config, force: bool):
    """Lock the work dir for this run (the first process of a launch), so
    that no other run writes there, and refuse to start a new run over an
    earlier one's checkpoints. The other processes wait for its verdict."""
    lock, error = None, None
    if launch_rank() == 0:
        try:
            lock, aside = claim_work_dir(cfg.work_dir, bool(cfg.get('resume')),
                                         force)
            if aside:
                print(f'train.py: the earlier run\'s files are in {aside}',
                      file=sys.stderr)
        except ConfigCheckError as e:
            error = e
    if torch_dist.is_initialized():
        verdict = [error is None]
        torch_dist.broadcast_object_list(verdict, src=0)
        if not verdict[0] and error is None:
            sys.exit(1)  # the first process says why
    if error is not None:
        raise error
    return lock


def main():
    args = parse_args()
    setup_runtime()
    from teskd_mm.hooks import NonFiniteLossError
    cfg = merge_args(Config.fromfile(args.config), args)
    if args.trust_checkpoint and not cfg.get('load_from'):
        sys.exit('train.py: error: --trust-checkpoint trusts the checkpoint '
                 'named on the command line, and none is: give --resume '
                 'PATH or --cfg-options load_from=PATH.')
    trust_if_asked(args, cfg.get('load_from'))
    missing = missing_reliability_hooks(cfg)
    if missing:
        print(f'train.py: note: the config declares no {", ".join(missing)}; '
              'inherit configs/_base_/default_runtime.py or declare them '
              '(README, "TESKD in your own config").', file=sys.stderr)
    init_cpu_distributed(args.launcher)
    cfg = prepare_cfg(cfg, args.launcher)
    try:
        # Before the Runner: a refused config leaves no work dir behind.
        check_config(cfg, 'train', distributed=args.launcher != 'none')
        lock = claim(cfg, args.force)
    except ConfigCheckError as e:
        sys.exit(f'train.py: error: {e}')
    try:
        # No name holds the Runner: it is released when training returns,
        # before the process group is closed (close_distributed).
        Runner.from_cfg(cfg).train()
    except NonFiniteLossError as e:
        sys.exit(f'train.py: error: {e}')
    except OSError as e:
        # A full disk or a folder that cannot be written: one line, and
        # the checkpoint that is still good.
        last = last_checkpoint(cfg.work_dir)
        kept = f'the last checkpoint, {last}, is intact' if last else \
            'no checkpoint had been written'
        sys.exit(f'train.py: error: writing {e.filename or cfg.work_dir} '
                 f'failed: {e.strerror or e}; {kept}.')
    finally:
        if lock is not None:
            release(lock)
    close_distributed()


if __name__ == '__main__':
    main()
