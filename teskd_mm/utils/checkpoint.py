"""Checkpoint files: written whole, chosen for resume, checked before use.

Everything this package does with checkpoint files on disk lives here:

- :func:`atomic_write` and the ``'atomic_local'`` file backend, through
  which :class:`~teskd_mm.hooks.SafeCheckpointHook` has mmengine save every
  checkpoint, so that a file appears under its name only once complete;
- :func:`load_checkpoint_file`, the only way a checkpoint is unpickled
  (mmengine's loads included): torch's ``weights_only`` loading with an
  allow-list of the types mmengine's checkpoints hold, so that a file
  cannot run code; :func:`trust_checkpoint` lifts it for one file;
- :func:`saved_config`, the training config a checkpoint carries, read as
  plain data (mmengine would execute it);
- :func:`read_checkpoint`, which checks a checkpoint's integrity and reads
  its structure (keys, shapes, meta) without loading its tensors;
- :func:`resolve_resume`, which picks the checkpoint ``--resume`` continues
  from, and :func:`check_checkpoint_fits`, which compares it with the
  model a config builds.
"""
import ast
import contextlib
import os
import os.path as osp
import pickle
import re
import zipfile
from typing import IO, Any, Callable, Dict, List, Optional, Set, Union

import numpy as np
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.fileio import LocalBackend, register_backend
from mmengine.logging import HistoryBuffer, print_log
from mmengine.runner import CheckpointLoader

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


def _history_buffer_statistic(owner: Any, name: Any) -> Any:
    """Stands in for ``getattr`` when a checkpoint is unpickled.

    mmengine pickles every ``HistoryBuffer`` of the message hub with its
    statistic methods, as ``getattr(HistoryBuffer, 'mean')`` and the like.
    A general ``getattr`` would let a crafted file reach any attribute of
    the allowed types; this one answers those four lookups only.
    """
    if owner is HistoryBuffer and name in ('min', 'max', 'mean', 'current'):
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'getattr({getattr(owner, "__name__", type(owner).__name__)}, '
        f'{name!r})')


def _numpy_globals() -> list:
    """numpy's arrays, scalars and dtypes, under numpy 2's names and under
    numpy 1's (``numpy.core``), which older checkpoints carry."""
    core = np._core.multiarray if hasattr(np, '_core') else \
        np.core.multiarray
    found = [np.ndarray, np.dtype, core._reconstruct, core.scalar]
    found += [(core._reconstruct, 'numpy.core.multiarray._reconstruct'),
              (core.scalar, 'numpy.core.multiarray.scalar')]
    # numpy >= 1.25 pickles a dtype with its class (numpy.dtypes.*DType).
    found += sorted({type(np.dtype(c)) for c in '?bhilqpBHILQPefdgFDGUSV'},
                    key=str)
    return found


# Everything mmengine's, mmpretrain's and this package's checkpoints hold
# besides tensors and plain containers (which torch allows itself): the
# message hub's HistoryBuffers (with their statistic methods) and the numpy
# arrays and scalars in them and in ``meta``. Nothing else is unpickled.
CHECKPOINT_GLOBALS = [
    HistoryBuffer,
    (_history_buffer_statistic, 'builtins.getattr'),
    *_numpy_globals(),
]
_TRUSTED: Set[str] = set()
TRUST_HINT = ('if you trust the file (you wrote it, or its source is one you '
              'trust), load it anyway with --trust-checkpoint '
              '(teskd_mm.utils.checkpoint.trust_checkpoint(path) in Python)')


class UnsafeCheckpointError(ConfigCheckError):
    """A checkpoint whose unpickling would call something not allowed."""


def trust_checkpoint(path: str) -> None:
    """Load this one file with full unpickling, which can run its code.

    The explicit opt-in for a checkpoint the allow-list refuses; every
    other file is still loaded safely.

    Args:
        path (str): The checkpoint file.
    """
    _TRUSTED.add(osp.realpath(path))


def _refused_type(error: Exception) -> str:
    """What a refused checkpoint tried to load, from torch's message."""
    text = str(error)
    # torch wraps the unpickler's own words in advice of its own.
    text = text.split('WeightsUnpickler error:')[-1]
    text = text.split('Check the documentation of torch.load')[0]
    for pattern in (r'GLOBAL ([\w.]+)', r'unrecognized function ([^\n]+)',
                    r'but got ([^\n]+)', r'(getattr\([^\n]*\))'):
        m = re.search(pattern, text)
        if m:
            return m.group(1).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def load_checkpoint_file(path: str,
                         map_location: Any = 'cpu',
                         mmap: bool = False) -> Any:
    """Unpickle a checkpoint file without letting it run code.

    torch's ``weights_only`` loader with :data:`CHECKPOINT_GLOBALS`, for
    this call only (no process-wide setting is changed; an explicit
    ``weights_only=True`` also overrides ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``).
    Files given to :func:`trust_checkpoint` load in full.

    Args:
        path (str): The checkpoint file.
        map_location: As in ``torch.load``. Defaults to ``'cpu'``.
        mmap (bool): Map the tensors instead of reading them.

    Returns:
        The checkpoint, as ``torch.load`` gives it.

    Raises:
        UnsafeCheckpointError: The file would load a type not allowed; the
            message names the file, the type and the opt-in.
    """
    if osp.realpath(path) in _TRUSTED:
        return torch.load(
            path, map_location=map_location, weights_only=False, mmap=mmap)
    try:
        with torch.serialization.safe_globals(CHECKPOINT_GLOBALS):
            return torch.load(
                path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpointError(
            f'{path} is refused: loading it would call or build '
            f'{_refused_type(e)}, which is not among the types checkpoints '
            'of mmengine, mmpretrain and teskd_mm hold, so the file could '
            f'run code; {TRUST_HINT}.') from None


# mmengine reads local checkpoints (resume, load_from, init_cfg Pretrained,
# Runner.load_checkpoint) through the loader registered for paths without a
# scheme; this one is its own, with the safe unpickling above.
@CheckpointLoader.register_scheme(prefixes='', force=True)
def load_from_local(filename: str, map_location: Any) -> Any:
    """mmengine's loader of local checkpoint files, unpickling safely."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    return load_checkpoint_file(filename, map_location)


_CONFIG_NAMES = {'True': True, 'False': False, 'None': None,
                 'inf': float('inf'), 'nan': float('nan')}


def _config_value(node: ast.AST) -> Any:
    """A value of a dumped config: literals, ``dict(...)``, containers."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [_config_value(n) for n in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.Dict) and None not in node.keys:
        return {_config_value(k): _config_value(v)
                for k, v in zip(node.keys, node.values)}
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
            node.func.id == 'dict' and not node.args and \
            all(k.arg for k in node.keywords):
        return {k.arg: _config_value(k.value) for k in node.keywords}
    if isinstance(node, ast.UnaryOp) and isinstance(
            node.op, (ast.USub, ast.UAdd)):
        value = _config_value(node.operand)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.Name) and node.id in _CONFIG_NAMES:
        return _CONFIG_NAMES[node.id]
    raise ValueError(f'line {getattr(node, "lineno", "?")}: '
                     f'{ast.unparse(node)[:60]}')


def saved_config(ckpt: Any, path: str) -> Optional[Config]:
    """The training config a checkpoint carries in ``meta['cfg']``.

    mmengine dumps it as Python, and ``Config.fromstring`` would execute
    that text: it is read here as plain data (assignments of literals and
    ``dict(...)``), and anything else is refused. ``meta['config']``, which
    mmengine's resume would execute too, is held to the same rule.

    Args:
        ckpt: The checkpoint, from :func:`load_checkpoint_file`.
        path (str): Its file, for messages.

    Returns:
        Config | None: The config, or None when the checkpoint has none.

    Raises:
        UnsafeCheckpointError: A config text that is not plain data.
    """
    meta = ckpt.get('meta') if isinstance(ckpt, dict) else None
    if not isinstance(meta, dict):
        return None
    found = {}
    for key in ('cfg', 'config'):
        if meta.get(key):
            found[key] = _config_from_text(meta[key], path, key)
    return Config(found['cfg']) if 'cfg' in found else None


def _config_from_text(text: Any, path: str, key: str) -> dict:
    """A dumped config's values, read without running it."""
    try:
        if not isinstance(text, str):
            raise ValueError(f'a {type(text).__name__}, not text')
        values = {}
        for stmt in ast.parse(text).body:
            if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
                    and isinstance(stmt.targets[0], ast.Name)):
                raise ValueError(f'line {stmt.lineno}: '
                                 f'{ast.unparse(stmt)[:60]}')
            values[stmt.targets[0].id] = _config_value(stmt.value)
    except (SyntaxError, ValueError) as e:
        raise UnsafeCheckpointError(
            f'{path} is refused: the training config it carries '
            f'(meta[{key!r}]) is not plain data ({e}), and reading it would '
            'run it as code. Pass a checkpoint written by tools/train.py.'
        ) from None
    return values


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
        ckpt = load_checkpoint_file(path, mmap=True)
    except UnsafeCheckpointError:
        raise
    except Exception as e:
        raise ConfigCheckError(
            f'{path} is truncated or not a PyTorch checkpoint '
            f'({type(e).__name__}: {e})') from e
    saved_config(ckpt, path)
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
        except UnsafeCheckpointError as e:
            raise ConfigCheckError(f'{what} {e}') from None
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
        saved = saved_config(ckpt, path)
        if cfg is not None and saved is not None:
            changed = config_differences(cfg, saved, ('model', ))
            if changed:
                detail.insert(0, 'the model config changed since training: '
                              + '; '.join(changed[:5]))
        raise ConfigCheckError(
            f'{path} does not belong to this config: {"; ".join(detail)}. '
            'Pass the config the checkpoint was trained with.')
