"""Train and test from Python, as ``tools/train.py`` and ``tools/test.py`` do.

Each call checks the config before anything is written (data, model,
checkpoint), runs mmengine's Runner (or the runner the config's
``runner_type`` names, as mmpretrain's tools do) and leaves no process group
behind. Problems are raised as :class:`RunError` (or, from the checks,
:class:`~teskd_mm.utils.errors.ConfigCheckError`), one line each, which the
tools print.
"""
from typing import IO, Optional

import torch.distributed as torch_dist
from mmengine.config import Config
from mmengine.fileio import dump
from mmengine.logging import print_log
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from ..hooks import NonFiniteLossError
from ..utils.checkpoint import last_checkpoint
from ..utils.errors import ConfigCheckError
from ..utils.preflight import check_config
from ..utils.runtime import (close_distributed, init_cpu_distributed,
                             launch_rank, missing_reliability_hooks,
                             prepare_cfg)
from ..utils.work_dir import claim_work_dir, release


class RunError(RuntimeError):
    """Training or testing stopped; the message says why and what is kept."""


def build_runner(cfg: Config) -> Runner:
    """The config's runner: ``runner_type`` from mmengine's ``RUNNERS`` when
    the config names one, else mmengine's ``Runner``."""
    if 'runner_type' not in cfg:
        return Runner.from_cfg(cfg)
    return RUNNERS.build(cfg)


def _prepare(cfg: Config, mode: str) -> Config:
    """The process group where needed, the libraries' adjustments, and the
    pre-flight check of ``mode``."""
    launcher = cfg.get('launcher', 'none')
    init_cpu_distributed(launcher)
    cfg = prepare_cfg(cfg, launcher)
    # Before the Runner: a refused config leaves no work dir behind.
    return check_config(cfg, mode, distributed=launcher != 'none')


def _claim(cfg: Config, force: bool) -> Optional[IO[str]]:
    """Lock the work dir for this run (the first process of a launch), so
    that no other run writes there, and refuse to start a new run over an
    earlier one's checkpoints. The other processes wait for its verdict."""
    lock, error = None, None
    if launch_rank() == 0:
        try:
            lock, aside = claim_work_dir(cfg.work_dir, bool(cfg.get('resume')),
                                         force)
            if aside:
                print_log(f'The earlier run\'s files are in {aside}.',
                          logger='current', level=30)
        except ConfigCheckError as e:
            error = e
    if torch_dist.is_initialized():
        verdict = [error is None]
        torch_dist.broadcast_object_list(verdict, src=0)
        if not verdict[0] and error is None:
            raise RunError('the first process refused the work dir')
    if error is not None:
        raise error
    return lock


def train(cfg: Config, force: bool = False) -> None:
    """Train ``cfg`` in ``cfg.work_dir``.

    Args:
        cfg (Config): The full config, with ``work_dir`` and, for several
            processes, ``launcher`` set (as the tools set them).
        force (bool): Start a new run where an earlier one left checkpoints,
            moving them into ``superseded_<time>/`` first.

    Raises:
        ConfigCheckError: The config, data or checkpoint cannot be used.
        RunError: Training stopped (a non-finite loss, a write that failed).
    """
    missing = missing_reliability_hooks(cfg)
    if missing:
        print_log(f'The config declares no {", ".join(missing)}; inherit '
                  'configs/_base_/default_runtime.py or declare them '
                  '(docs/own_config.md).', logger='current', level=30)
    cfg = _prepare(cfg, 'train')
    lock = _claim(cfg, force)
    try:
        # No name holds the Runner: it is released when training returns,
        # before the process group is closed (close_distributed).
        build_runner(cfg).train()
    except NonFiniteLossError as e:
        raise RunError(str(e)) from None
    except OSError as e:
        # A full disk or a folder that cannot be written: one line, and
        # the checkpoint that is still good.
        last = last_checkpoint(cfg.work_dir)
        kept = f'the last checkpoint, {last}, is intact' if last else \
            'no checkpoint had been written'
        raise RunError(f'writing {e.filename or cfg.work_dir} failed: '
                       f'{e.strerror or e}; {kept}.') from None
    finally:
        if lock is not None:
            release(lock)
    close_distributed()


def test(cfg: Config, checkpoint: str, out: Optional[str] = None) -> dict:
    """Evaluate ``checkpoint`` on the test split of ``cfg``.

    Args:
        cfg (Config): The full config, with ``work_dir`` set (and
            ``launcher`` for several processes).
        checkpoint (str): The checkpoint to test.
        out (str, optional): Dump the metrics there (``.json``, ``.yaml``,
            ``.pkl``), from the first process.

    Returns:
        dict: The metrics.

    Raises:
        ConfigCheckError: The config, data or checkpoint cannot be used.
    """
    cfg.load_from = checkpoint
    cfg = _prepare(cfg, 'test')
    runner = build_runner(cfg)
    metrics = runner.test()
    if out and runner.rank == 0:
        dump(metrics, out)
    del runner  # released before the process group is closed
    close_distributed()
    return metrics
