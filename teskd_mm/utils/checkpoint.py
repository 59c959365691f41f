"""Checkpoint files: written whole, chosen for resume, checked before use.

Everything this package does with checkpoint files on disk lives here:

- :func:`atomic_write` and the ``'atomic_local'`` file backend, through
  which :class:`~teskd_mm.hooks.SafeCheckpointHook` has mmengine save every
  checkpoint, so that a file appears under its name only once complete;
- :func:`read_checkpoint`, which checks a checkpoint's integrity and reads
  its structure (keys, shapes, meta) without loading its tensors;
- :func:`resolve_resume`, which picks the checkpoint ``--resume`` continues
  from, and :func:`check_checkpoint_fits`, which compares it with the
  model a config builds.
"""
import contextlib
import os
import os.path as osp
import re
import zipfile
from typing import IO, Any, Callable, Dict, List, Optional, Union

import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.fileio import LocalBackend, register_backend
from mmengine.logging import print_log

from .config_diff import config_differences
from .errors import ConfigCheckError

CKPT_NAME = re.compile(r'^(epoch|iter)_(\d+)\.pth$')
# What atomic_write leaves behind when its process is killed mid-write.
PARTIAL = re.compile(r'^\.(.+)\.\d+\.tmp$')


def atomic_write(path: str, write: Callable[[IO[bytes]], None]) -> None:
    """Write a file so that it appears at ``path`` only once complete.

    ``write`` fills a temporary file next to ``path``, which is flushed to
    disk and then renamed over ``path`` (an atomic step on POSIX file
    systems). A process killed at any moment leaves either the old file or
    the new one, never a truncated one; a failed write leaves no temporary
    file behind.

    Args:
        path (str): The file to write.
        write (Callable): Called with the open binary file to fill.
    """
    path = osp.abspath(path)
    folder = osp.dirname(path)
    os.makedirs(folder, exist_ok=True)
    tmp = osp.join(folder, f'.{osp.basename(path)}.{os.getpid()}.tmp')
    try:
        with open(tmp, 'wb') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    # Make the rename itself durable.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@register_backend('atomic_local', force=True)
class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend, writing every file atomically.

    mmengine's ``save_checkpoint`` hands the serialised checkpoint to the
    file backend named by ``backend_args``; this one writes it with
    :func:`atomic_write`, so a run killed while saving leaves the previous
    checkpoints and no truncated file. Select it with
    ``backend_args=dict(backend='atomic_local')``.
    """

    def put(self, obj: bytes, filepath: Union[str, os.PathLike]) -> None:
        atomic_write(str(filepath), lambda f: f.write(obj))

    def put_text(self,
                 obj: str,
                 filepath: Union[str, os.PathLike],
                 encoding: str = 'utf-8') -> None:
        self.put(obj.encode(encoding), filepath)


def remove_partial_writes(folder: str) -> List[str]:
    """Delete the temporary files of writes a killed process left behind.

    Returns:
        list[str]: The names removed.
    """
    removed = []
    if osp.isdir(folder):
        for name in sorted(os.listdir(folder)):
            if PARTIAL.match(name):
                os.remove(osp.join(folder, name))
                removed.append(name)
    return removed


def read_checkpoint(path: str) -> Dict[str, Any]:
    """A checkpoint's contents, its integrity checked, its tensors mapped.

    Every member of the zip file is checked against the CRC stored for it
    (torch does not check them when loading, so a damaged file would load
    as wrong weights), in one sequential pass over the bytes. The structure
    (keys, shapes, ``meta``) is then unpickled with the tensors memory-
    mapped, not read: whoever loads the checkpoint next (the Runner) reads
    it in full once, from the page cache where it fits in memory.

    Args:
        path (str): The checkpoint file.

    Returns:
        dict: The checkpoint as ``torch.load`` gives it.

    Raises:
        ConfigCheckError: What is wrong, after the file's name.
    """
    if not osp.isfile(path):
        raise ConfigCheckError(f'{path} does not exist')
    if osp.getsize(path) == 0:
        raise ConfigCheckError(f'{path} is empty')
    if not zipfile.is_zipfile(path):
        raise ConfigCheckError(
            f'{path} is truncated or not a PyTorch checkpoint (no complete '
            'zip directory)')
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except Exception as e:
        raise ConfigCheckError(
            f'{path} is corrupt ({type(e).__name__}: {e})') from e
    if bad is not None:
        raise ConfigCheckError(
            f'{path} is corrupt (its member {bad} fails its CRC check)')
    try:
        ckpt = torch.load(
            path, map_location='cpu', weights_only=False, mmap=True)
    except Exception as e:
        raise ConfigCheckError(
            f'{path} is truncated or not a PyTorch checkpoint '
            f'({type(e).__name__}: {e})') from e
    return ckpt


def checkpoint_problem(path: str) -> Optional[str]:
    """Why a checkpoint file cannot be loaded, or None if it can.

    The reason is phrased to follow the file's name, e.g. ``'is empty'``.
    """
    try:
        read_checkpoint(path)
    except ConfigCheckError as e:
        return str(e)[len(path) + 1:]
    return None


def last_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint ``<work_dir>/last_checkpoint`` names, if any.

    mmengine writes the file only after the checkpoint is saved, so what it
    names was written completely.
    """
    path = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(path):
        return None
    with open(path) as f:
        named = f.read().strip()
    return osp.abspath(named) if named else None


def _checkpoints_in(folder: str) -> List[str]:
    """``epoch_N.pth`` / ``iter_N.pth`` in a folder, newest step first."""
    if not osp.isdir(folder):
        return []
    found = []
    for name in os.listdir(folder):
        m = CKPT_NAME.match(name)
        if m:
            found.append((int(m.group(2)), osp.abspath(osp.join(folder,
                                                                 name))))
    return [p for _, p in sorted(found, reverse=True)]


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
        except ConfigCheckError as e:
            alt = [
                p for p in _checkpoints_in(osp.dirname(load_from) or '.')
                if p != osp.abspath(load_from) and checkpoint_problem(p) is None
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
    candidates = _checkpoints_in(work_dir)
    if named is None and not candidates:
        return None  # nothing to resume: a fresh start, as mmengine does
    rejected = []
    for path in ([named] if named else []) + \
            [p for p in candidates if p != named]:
        try:
            ckpt = read_checkpoint(path)
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


def drop_resume_state(model: nn.Module, ckpt: Dict[str, Any]) -> List[str]:
    """Take the resume-only state out of a checkpoint dict, in place, and
    record in its ``meta`` that it was taken out.

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
    if dropped:
        ckpt.setdefault('meta', {})['resume_state_dropped'] = dropped
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
    if not dropped or not has_resume_only_state(model):
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


def check_checkpoint_fits(model: nn.Module,
                          ckpt: Dict[str, Any],
                          path: str,
                          cfg: Optional[Config] = None,
                          exact: bool = False) -> None:
    """Every weight the model has must be in the checkpoint, same shape.

    mmengine loads with ``strict=False`` and only warns, so a checkpoint of
    another config would otherwise be tested or resumed half random.
    Entries that are empty in a freshly built model (the DTSKD prediction
    memory, sized by the data) are checked by their module when loaded.
    Where the checkpoint holds its training config, the message names the
    model settings that changed since.

    Args:
        model (nn.Module): The model the config builds.
        ckpt (dict): The checkpoint, from :func:`read_checkpoint`.
        path (str): Its file, for messages.
        cfg (Config, optional): The config that built ``model``.
        exact (bool): Also refuse weights the model does not have, as a
            resumed run must continue the very model (its optimizer state
            is per parameter). Defaults to False.
    """
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise ConfigCheckError(f'{path} holds no state_dict; it is not a '
                               'model checkpoint written by tools/train.py.')
    state = {re.sub(r'^module\.', '', k): v for k, v in state.items()}
    wanted = {
        k: v
        for k, v in model.state_dict().items()
        if not (torch.is_tensor(v) and v.numel() == 0)
    }
    missing = [k for k in wanted if k not in state]
    own = model.state_dict()
    extra = [
        k for k in state
        if exact and k not in own and hasattr(state[k], 'shape')
    ]
    wrong = [
        k for k in wanted if k in state and hasattr(state[k], 'shape')
        and tuple(state[k].shape) != tuple(wanted[k].shape)
    ]
    if missing or wrong or extra:
        detail = []
        if missing:
            detail.append(f'{len(missing)} of the model\'s weights are '
                          f'missing, e.g. {missing[:3]}')
        if extra:
            detail.append(f'{len(extra)} weights are not in the model, e.g. '
                          f'{extra[:3]}')
        if wrong:
            k = wrong[0]
            detail.append(f'{len(wrong)} have another shape, e.g. {k} is '
                          f'{tuple(state[k].shape)} in the checkpoint and '
                          f'{tuple(wanted[k].shape)} in the config')
        saved = (ckpt.get('meta') or {}).get('cfg')
        if cfg is not None and saved:
            changed = config_differences(
                cfg, Config.fromstring(saved, file_format='.py'),
                ('model', ))
            if changed:
                detail.insert(0, 'the model config changed since training: '
                              + '; '.join(changed[:5]))
        raise ConfigCheckError(
            f'{path} does not belong to this config: {"; ".join(detail)}. '
            'Pass the config the checkpoint was trained with.')
