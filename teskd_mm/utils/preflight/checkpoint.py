"""Pre-flight checks of the checkpoint a run resumes from or tests."""
import os
import os.path as osp
import re
import zipfile
from typing import List, Optional

import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.logging import print_log

from .errors import ConfigCheckError

CKPT_NAME = re.compile(r'^(epoch|iter)_(\d+)\.pth$')


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


def check_checkpoint_fits(model: nn.Module, path: str) -> None:
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
