"""Choosing the checkpoint a resumed run continues from, and the state
only resuming needs."""
import os.path as osp
from typing import Any, Dict, List, Optional

import torch.nn as nn
from mmengine.config import Config
from mmengine.logging import print_log

from ..errors import ConfigCheckError
from .files import checkpoints_in, last_checkpoint
from .loading import (UnsafeCheckpointError, checkpoint_problem,
                      read_checkpoint)


def resolve_resume(cfg: Config,
                   what: Optional[str] = None) -> Optional[Dict[str, Any]]:
    """Choose the checkpoint a run loads, and read its structure.

    An explicit ``load_from`` must be intact. With ``resume=True`` and no
    ``load_from`` the run continues from the file ``last_checkpoint`` names
    and ``load_from`` is set to it. Only when that file is missing or
    damaged does it fall back, with a warning saying why, to the newest
    intact ``epoch_N.pth`` / ``iter_N.pth`` of the work dir.

    Args:
        cfg (Config): The config; ``load_from`` may be set here.
        what (str, optional): How messages call ``load_from``. Defaults to
            ``'--resume'`` or ``'load_from'``.

    Returns:
        dict | None: The checkpoint, as :func:`read_checkpoint` gives it,
        or None when nothing is loaded (or it is not a local file).
    """
    load_from = cfg.get('load_from')
    what = what or ('--resume' if cfg.get('resume') else 'load_from')
    if load_from:
        if '://' in load_from:
            return None
        try:
            return read_checkpoint(load_from)
        except UnsafeCheckpointError as e:
            raise ConfigCheckError(f'{what} {e}') from None
        except ConfigCheckError as e:
            alt = [
                p for p in checkpoints_in(osp.dirname(load_from) or '.')
                if p != osp.abspath(load_from)
                and checkpoint_problem(p) is None
            ]
            hint = f' The newest intact one beside it is {alt[0]}.' \
                if alt else ''
            raise ConfigCheckError(
                f'{what} {e}; pass a checkpoint written completely by '
                f'tools/train.py.{hint}') from e
    if not cfg.get('resume'):
        return None
    work_dir = cfg.get('work_dir')
    named = last_checkpoint(work_dir)
    candidates = checkpoints_in(work_dir)
    if named is None and not candidates:
        return None  # nothing to resume: a fresh start, as mmengine does
    rejected = []
    for path in ([named] if named else []) + \
            [p for p in candidates if p != named]:
        try:
            ckpt = read_checkpoint(path)
        except UnsafeCheckpointError as e:
            # Not damaged but crafted: no quiet fall-back to an older file.
            raise ConfigCheckError(f'--resume {e}') from None
        except ConfigCheckError as e:
            rejected.append(str(e))
            continue
        if path != named:
            why = '; '.join(rejected) if rejected else \
                f'{work_dir} has no last_checkpoint file'
            print_log(
                f'Resuming from {path}, the newest intact checkpoint, '
                f'because {why}.',
                logger='current',
                level=30)
        cfg.load_from = path
        return ckpt
    raise ConfigCheckError(
        f'--resume found no intact checkpoint in {work_dir}: '
        f'{"; ".join(rejected)}. Move these files away to start afresh, or '
        'pass --resume PATH to a good checkpoint.')


def _resume_only_keys(model: nn.Module) -> List[str]:
    """The state_dict keys modules declare in ``resume_only_state``."""
    model = getattr(model, 'module', model)  # DDP and the like
    keys = []
    for name, module in model.named_modules():
        for key in getattr(module, 'resume_only_state', ()):
            keys.append(f'{name}.{key}' if name else key)
    return keys


def has_resume_only_state(model: nn.Module) -> bool:
    """Whether some module keeps state that only resuming needs."""
    return bool(_resume_only_keys(model))


# What a checkpoint keeps for resuming only, besides modules' own state.
TRAINING_STATE = ('optimizer', 'param_schedulers')


def drop_resume_state(model: nn.Module,
                      ckpt: Dict[str, Any],
                      training_state: bool = False) -> List[str]:
    """Take the resume-only state out of a checkpoint dict, in place, and
    record in its ``meta`` that it was taken out.

    Args:
        model (nn.Module): The model, whose modules declare their
            ``resume_only_state``.
        ckpt (dict): The checkpoint.
        training_state (bool): Also take out the optimizer's and the
            parameter schedulers' state (:data:`TRAINING_STATE`).

    Returns:
        list[str]: The keys removed.
    """
    state = ckpt.get('state_dict', {})
    dropped = [
        k for k in _resume_only_keys(model)
        if k in state or f'module.{k}' in state
    ]
    for key in dropped:
        state.pop(key, None)
        state.pop(f'module.{key}', None)
    if training_state:
        for key in TRAINING_STATE:
            if ckpt.pop(key, None) is not None:
                dropped.append(key)
    if dropped:
        # A new dict: mmengine hands one ``meta`` to the best save and to
        # the epoch save that follows it, which keeps the state.
        ckpt['meta'] = dict(ckpt.get('meta') or {},
                            resume_state_dropped=dropped)
    return dropped


def check_resume_state(model: nn.Module, ckpt: Dict[str, Any], path: str,
                       work_dir: str) -> None:
    """A resumed run needs the state only the newest checkpoint keeps.

    Args:
        model (nn.Module): The model the config builds.
        ckpt (dict): The checkpoint to resume from.
        path (str): Its file, for messages.
        work_dir (str): The work dir, whose ``last_checkpoint`` names the
            newest checkpoint.
    """
    dropped = (ckpt.get('meta') or {}).get('resume_state_dropped')
    if not dropped or not (has_resume_only_state(model) or
                           set(dropped) & set(TRAINING_STATE)):
        return
    newest = last_checkpoint(work_dir)
    hint = (f'resume from {newest}, the newest' if newest and
            osp.abspath(newest) != osp.abspath(path) else
            'no newer checkpoint of this run holds it either')
    raise ConfigCheckError(
        f'{path} holds no {", ".join(dropped)}: that state is kept only in '
        'the newest checkpoint of a run, and resuming without it would not '
        f'continue the run that was trained; {hint}. To train on from these '
        'weights with that state started afresh, use '
        f'--cfg-options load_from={path} without --resume.')


def _batch_text(batch: Dict[str, int]) -> str:
    per, n = batch['per_process'], batch['processes']
    return f'{per * n} ({n} process{"es" if n > 1 else ""} x {per})'


def check_resume_batch(cfg: Config, ckpt: Dict[str, Any], path: str,
                       world_size: int) -> None:
    """Say when a resumed run changes the total batch; refuse
    ``auto_scale_lr`` then, which a resume cannot apply.

    The resumed optimizer and schedule keep the checkpoint's learning rate,
    so the Runner's scaling of the config's rate would be overwritten
    without a word.

    Args:
        cfg (Config): The config, with ``auto_scale_lr`` as the run has it.
        ckpt (dict): The checkpoint resumed from.
        path (str): Its file, for messages.
        world_size (int): Processes of the resumed run.
    """
    saved = (ckpt.get('meta') or {}).get('batch')
    per = (cfg.get('train_dataloader') or {}).get('batch_size')
    if not isinstance(saved, dict) or not per:
        return
    now = dict(per_process=int(per), processes=int(world_size))
    old_total = saved['per_process'] * saved['processes']
    if now['per_process'] * now['processes'] == old_total:
        return
    groups = (ckpt.get('optimizer') or {}).get('param_groups') or [{}]
    lr = groups[0].get('lr')
    if (cfg.get('auto_scale_lr') or {}).get('enable'):
        raise ConfigCheckError(
            f'--auto-scale-lr with --resume from {path}: the total batch '
            f'changes from {_batch_text(saved)} to {_batch_text(now)}, but a '
            'resumed run continues with the optimizer and schedule of the '
            f'checkpoint (lr {lr}), so the scaling would not apply. Resume '
            'without --auto-scale-lr, or keep the batch of the run.')
    print_log(
        f'Resuming {path} at a total batch of {_batch_text(now)}; it was '
        f'trained at {_batch_text(saved)}, so an epoch has another number '
        f'of iterations; the learning rate in effect stays the '
        f'checkpoint\'s, {lr}, and its schedule continues as saved.',
        logger='current',
        level=30)
