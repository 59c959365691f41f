"""Checkpoint files on disk: written whole, found again."""
import contextlib
import os
import os.path as osp
import re
from typing import IO, Callable, List, Optional, Union

from mmengine.fileio import LocalBackend, register_backend

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


def checkpoints_in(folder: str) -> List[str]:
    """``epoch_N.pth`` / ``iter_N.pth`` in a folder, newest step first."""
    if not osp.isdir(folder):
        return []
    found = []
    for name in os.listdir(folder):
        m = CKPT_NAME.match(name)
        if m:
            found.append((int(m.group(2)),
                          osp.abspath(osp.join(folder, name))))
    return [p for _, p in sorted(found, reverse=True)]
