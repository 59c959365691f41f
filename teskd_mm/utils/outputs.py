"""Whether a tool can write where it was told to, asked before its work."""
import os
import os.path as osp
from typing import Optional


def output_problem(path: str, folder: bool = False) -> Optional[str]:
    """Why ``path`` cannot be written, or None if it can.

    Missing folders count as writable where the nearest existing one is a
    writable folder (the tool makes them).

    Args:
        path (str): A file to write, or with ``folder`` a folder to write
            into.
        folder (bool): ``path`` is a folder.

    Returns:
        str | None: The reason, phrased to follow ``path``.
    """
    path = osp.abspath(path)
    if folder and osp.exists(path) and not osp.isdir(path):
        return 'is a file, not a folder'
    if not folder and osp.isdir(path):
        return 'is a folder, not a file'
    existing = path if folder else osp.dirname(path)
    while not osp.exists(existing):
        existing = osp.dirname(existing)
    if not osp.isdir(existing):
        return f'cannot be made: {existing} is a file, not a folder'
    if not os.access(existing, os.W_OK | os.X_OK):
        return f'cannot be written: {existing} is not writable by this user'
    return None
