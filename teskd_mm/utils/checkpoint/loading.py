"""Reading a checkpoint without letting it run code, its integrity
checked."""
import ast
import os.path as osp
import pickle
import re
import zipfile
from typing import Any, Dict, Optional, Set

import numpy as np
import torch
from mmengine.config import Config
from mmengine.logging import HistoryBuffer
from mmengine.runner import CheckpointLoader

from ..errors import ConfigCheckError


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
