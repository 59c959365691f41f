"""One place for the work-arounds that the tools need on current libraries.

mmengine 0.10.7 and mmpretrain 1.2.0 predate the torch, numpy and setuptools
releases this package is used with; every tool calls :func:`setup_runtime`
and :func:`prepare_cfg` instead of patching things where they break.
"""
import contextlib
import os
import os.path as osp
from typing import IO, Callable, Optional

import torch
import torch.distributed as torch_dist
from mmengine.config import Config

# Hooks every training run gets unless its config names them already.
DEFAULT_CUSTOM_HOOKS = ('EpochSeedHook', 'NonFiniteLossHook')


def setup_runtime() -> None:
    """Set up the process before any checkpoint is read.

    torch >= 2.6 unpickles with ``weights_only=True`` by default, and the
    checkpoints mmengine writes carry its ``HistoryBuffer`` and numpy objects,
    so test, resume and ``load_from`` would all fail. Checkpoints read by the
    tools are the user's own training runs; loading them in full is what
    mmengine was written for. An explicit setting by the user is kept.
    """
    os.environ.setdefault('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    use_atomic_checkpoint_writes()
    import teskd_mm  # noqa: F401  (registers the components)


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


def atomic_save_checkpoint(checkpoint: dict,
                           filename: str,
                           file_client_args: Optional[dict] = None,
                           backend_args: Optional[dict] = None) -> None:
    """mmengine's ``save_checkpoint``, atomic for local files.

    mmengine writes a checkpoint straight to its final name, so a run killed
    while saving leaves a truncated file there. Local files go through
    :func:`atomic_write`; other storage keeps mmengine's own writer.
    """
    from mmengine.fileio import LocalBackend, get_file_backend
    from mmengine.runner import checkpoint as mm_checkpoint
    local = file_client_args is None and '://' not in str(filename) and \
        isinstance(get_file_backend(filename, backend_args=backend_args),
                   LocalBackend)
    if not local:
        mm_checkpoint.save_checkpoint(checkpoint, filename, file_client_args,
                                      backend_args)
        return
    atomic_write(str(filename), lambda f: torch.save(checkpoint, f))


def use_atomic_checkpoint_writes() -> None:
    """Make every checkpoint the Runner saves go through
    :func:`atomic_save_checkpoint`. Idempotent."""
    from mmengine.runner import runner as mm_runner
    mm_runner.save_checkpoint = atomic_save_checkpoint


def init_cpu_distributed(launcher: str) -> bool:
    """Start the process group over gloo where no GPU can be used.

    mmengine's ``pytorch`` launcher calls ``torch.cuda.set_device``
    unconditionally, so on a CPU-only machine the group is started here,
    before the Runner, which then sees it as already initialised.

    Args:
        launcher (str): The ``--launcher`` of the tool.

    Returns:
        bool: Whether a CPU process group was started.
    """
    if launcher != 'pytorch' or torch.cuda.is_available() or \
            torch_dist.is_initialized():
        return False
    torch_dist.init_process_group(
        backend='gloo',
        rank=int(os.environ['RANK']),
        world_size=int(os.environ['WORLD_SIZE']))
    return True


def close_distributed() -> None:
    """End the process group, once every process has finished.

    Without this, the group's communication threads are still running when
    the interpreter exits, and a process can abort there ("terminate called
    without an active exception", SIGABRT) after its work is done, so the
    launcher reports a failed run. The barrier keeps a fast process from
    tearing down while another still writes checkpoints or logs.
    """
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.barrier()
        torch_dist.destroy_process_group()


def _hook_type(hook) -> str:
    kind = hook.get('type') if isinstance(hook, dict) else type(hook)
    return kind if isinstance(kind, str) else getattr(kind, '__name__', '')


def _add_reliability_hooks(cfg: Config, distributed: bool) -> None:
    """Checkpoints that survive a kill, exact resume, loss checks.

    mmengine's ``CheckpointHook`` becomes ``SafeCheckpointHook`` (same
    arguments), and ``EpochSeedHook`` and ``NonFiniteLossHook`` are added
    unless the config lists them (then its settings are kept). Distributed
    runs also get mmengine's ``SyncBuffersHook``: without it each process
    keeps its own BN statistics, so validation would score a different
    model on every process, none of them the one rank 0 saves.
    """
    hooks = cfg.get('default_hooks') or {}
    checkpoint = hooks.get('checkpoint')
    if isinstance(checkpoint, dict) and \
            _hook_type(checkpoint) == 'CheckpointHook':
        checkpoint['type'] = 'SafeCheckpointHook'
    custom = list(cfg.get('custom_hooks') or [])
    present = {_hook_type(h) for h in custom}
    wanted = list(DEFAULT_CUSTOM_HOOKS)
    if distributed:
        wanted.append('SyncBuffersHook')
    custom += [dict(type=t) for t in wanted if t not in present]
    cfg.custom_hooks = custom


def prepare_cfg(cfg: Config, launcher: str = 'none',
                cpu_distributed: Optional[bool] = None) -> Config:
    """Adjust a loaded config to what the installed libraries can run.

    Besides the work-arounds below, it adds the hooks of
    :func:`_add_reliability_hooks`.

    Args:
        cfg (Config): The config, already merged with command-line options.
        launcher (str): The launcher the tool was started with.
        cpu_distributed (bool, optional): Whether training is distributed on
            CPU; by default, whether a gloo group has been started.

    Returns:
        Config: The same config, changed in place.
    """
    cfg.launcher = launcher
    if cpu_distributed is None:
        cpu_distributed = launcher != 'none' and \
            torch_dist.is_initialized() and not torch.cuda.is_available()
    if cpu_distributed:
        # DDP on CPU must not be given device_ids; mmengine passes the local
        # rank unless the wrapper config names them.
        wrapper = cfg.get('model_wrapper_cfg') or dict(
            type='MMDistributedDataParallel',
            broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False))
        wrapper['device_ids'] = None
        cfg.model_wrapper_cfg = wrapper
        cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})
        cfg.env_cfg.dist_cfg['backend'] = 'gloo'
    _add_reliability_hooks(cfg, distributed=launcher != 'none')
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg.get(key)
        # persistent_workers needs worker processes.
        if loader and loader.get('num_workers', 0) == 0 and \
                loader.get('persistent_workers', False):
            loader['persistent_workers'] = False
    return cfg
