"""One training run per work dir, and never two runs' files mixed in one.

:func:`claim_work_dir` is what ``tools/train.py`` does with the work dir
after its pre-flight checks and before the Runner writes anything there:

- it takes an exclusive lock on ``<work_dir>/.train.lock`` for the life of
  the process (a POSIX record lock, ``fcntl.lockf``, which the system
  releases when the process ends, however it ends, and which the processes
  it forks, such as data-loader workers, do not inherit: a killed run's
  workers, which linger for seconds, do not hold it), so that a second run
  on the same work dir stops at once and names the running one;
- a new run (not ``--resume``) refuses to start where an earlier run left
  checkpoints, so that ``--resume`` there can only ever continue that
  earlier run; with ``force`` the earlier files are moved aside into
  ``<work_dir>/superseded_<time>/``, never deleted.
"""
import datetime
import fcntl
import os
import os.path as osp
import re
import shutil
import socket
import sys
from typing import IO, List, Optional, Tuple

from .errors import ConfigCheckError

LOCK_NAME = '.train.lock'
# What a run leaves in its work dir that another run must not take over.
RUN_FILES = re.compile(
    r'^((epoch|iter)_\d+\.pth|best_.*\.pth|last_checkpoint)$')


def default_work_dir(config: str) -> str:
    """``work_dirs/<config's folder>/<config's name>``: configs of one name
    in different folders (``teskd/`` and ``baseline/``) get their own."""
    folder = osp.basename(osp.dirname(osp.abspath(config)))
    return osp.join('./work_dirs', folder,
                    osp.splitext(osp.basename(config))[0])


def run_files(work_dir: str) -> List[str]:
    """Checkpoints and ``last_checkpoint`` in a work dir, sorted."""
    if not osp.isdir(work_dir):
        return []
    return sorted(n for n in os.listdir(work_dir) if RUN_FILES.match(n))


def lock_work_dir(work_dir: str) -> IO[str]:
    """Hold ``<work_dir>/.train.lock`` until :func:`release` or the end of
    the process.

    Raises:
        ConfigCheckError: Another process holds it; the message names it.
    """
    path = osp.join(work_dir, LOCK_NAME)
    try:
        os.makedirs(work_dir, exist_ok=True)
        f = open(path, 'a+')
    except OSError as e:
        raise ConfigCheckError(
            f'The work dir {work_dir} cannot be written: {e.strerror} '
            f'({e.filename}); choose another --work-dir.') from e
    try:
        fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        holder = f.read().strip() or 'another process'
        f.close()
        raise ConfigCheckError(
            f'{work_dir} is in use by another training run ({holder}); '
            'wait for it to end, or train into another --work-dir.')
    f.seek(0)
    f.truncate()
    started = datetime.datetime.now().isoformat(timespec='seconds')
    f.write(f'pid {os.getpid()} on {socket.gethostname()}, started '
            f'{started}: {" ".join(sys.argv)}\n')
    f.flush()
    return f


def release(lock: IO[str]) -> None:
    """Give up a lock of :func:`lock_work_dir`."""
    fcntl.lockf(lock, fcntl.LOCK_UN)
    lock.close()


def claim_work_dir(work_dir: str,
                   resume: bool,
                   force: bool = False) -> Tuple[IO[str], Optional[str]]:
    """Lock the work dir and make sure a new run starts on its own.

    Args:
        work_dir (str): The run's work dir.
        resume (bool): Whether the run continues the one in the work dir.
        force (bool): Start a new run where an earlier one left
            checkpoints, moving them aside first.

    Returns:
        tuple: The lock (for :func:`release`), and where the earlier run's
        files were moved, if they were.

    Raises:
        ConfigCheckError: The work dir is in use, or holds an earlier run's
            checkpoints and neither ``resume`` nor ``force`` is given.
    """
    lock = lock_work_dir(work_dir)
    earlier = run_files(work_dir)
    if resume or not earlier:
        return lock, None
    if not force:
        release(lock)
        raise ConfigCheckError(
            f'{work_dir} holds the checkpoints of an earlier run '
            f'({", ".join(earlier[:4])}{", ..." if len(earlier) > 4 else ""})'
            '; continue that run with --resume, train into another '
            '--work-dir, or pass --force to start afresh (the earlier '
            'files are then moved into a superseded_<time>/ folder).')
    stamp = datetime.datetime.now().strftime('%Y%m%d_%H%M%S')
    aside = osp.join(work_dir, f'superseded_{stamp}')
    os.makedirs(aside)
    for name in earlier:
        shutil.move(osp.join(work_dir, name), osp.join(aside, name))
    return lock, aside
