"""The work-arounds the tools need on current libraries, in one place.

mmengine 0.10.7 and mmpretrain 1.2.0 predate the torch, numpy and setuptools
releases this package is used with; the tools call :func:`prepare_cfg`
(through :mod:`teskd_mm.apis`) instead of patching things where they break.
Importing the package registers its components and its safe loader of
checkpoints (:mod:`teskd_mm.utils.checkpoint`).
"""
import gc
import logging
import os
import shutil
import subprocess
from typing import List, Optional

import torch
import torch.distributed as torch_dist
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.registry import init_default_scope

# What the configs of this package declare (configs/_base_/
# default_runtime.py) and what a config mixed into a stock one should too.
RELIABILITY_HOOKS = ('SafeCheckpointHook', 'EpochSeedHook',
                     'NonFiniteLossHook', 'SyncBuffersHook')


def setup_step_tool(threads: Optional[int] = None) -> None:
    """Set up a tool that times or profiles training steps outside the Runner.

    mmpretrain's registry scope, warnings-only logging (``init_weights``
    logs every parameter; only the figures matter there) and, if given, the
    number of CPU threads.
    """

    init_default_scope('mmpretrain')
    MMLogger.get_current_instance().setLevel(logging.WARNING)
    if threads is not None:
        torch.set_num_threads(threads)


def slurm_master_addr(node_list: str) -> str:
    """The first host of a Slurm node list, as ``scontrol`` expands it.

    Args:
        node_list (str): ``SLURM_NODELIST``, e.g. ``node[01-04],gpu7``.

    Returns:
        str: The first host name. A list naming one plain host is that host,
        with or without ``scontrol``.

    Raises:
        RuntimeError: The list needs ``scontrol`` to expand, and there is
            none on PATH, or it failed.
    """
    scontrol = shutil.which('scontrol')
    if scontrol:
        proc = subprocess.run([scontrol, 'show', 'hostnames', node_list],
                              capture_output=True, text=True)
        if proc.returncode == 0 and proc.stdout.split():
            return proc.stdout.split()[0]
        why = f'`scontrol show hostnames` failed ({proc.stderr.strip()})'
    else:
        why = 'scontrol, which expands it, is not on PATH'
    if node_list and not any(c in node_list for c in '[],'):
        return node_list
    raise RuntimeError(
        f'SLURM_NODELIST={node_list!r} names its hosts in Slurm\'s short '
        f'form, and {why}; set MASTER_ADDR to the first host.')


def slurm_to_torch_env() -> None:
    """Set torch's rendezvous variables from the ones srun sets.

    The same derivation as mmengine's ``_init_dist_slurm``: ``RANK`` from
    ``SLURM_PROCID``, ``WORLD_SIZE`` from ``SLURM_NTASKS``, ``LOCAL_RANK``
    from ``SLURM_LOCALID``; ``MASTER_ADDR`` and ``MASTER_PORT`` are kept
    where set, else the first host of ``SLURM_NODELIST`` and 29500.

    Raises:
        RuntimeError: A variable that srun sets is missing.
    """
    missing = [
        k for k in ('SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_NODELIST')
        if k not in os.environ
    ]
    if missing:
        raise RuntimeError(
            f'--launcher slurm reads {", ".join(missing)}, which srun sets '
            'and this process lacks; start it with tools/slurm_train.sh or '
            'srun.')
    os.environ['RANK'] = str(int(os.environ['SLURM_PROCID']))
    os.environ['WORLD_SIZE'] = str(int(os.environ['SLURM_NTASKS']))
    if 'SLURM_LOCALID' in os.environ:
        os.environ['LOCAL_RANK'] = str(int(os.environ['SLURM_LOCALID']))
    os.environ.setdefault('MASTER_PORT', '29500')
    if 'MASTER_ADDR' not in os.environ:
        os.environ['MASTER_ADDR'] = slurm_master_addr(
            os.environ['SLURM_NODELIST'])


def init_cpu_distributed(launcher: str) -> bool:
    """Start the process group over gloo where no GPU can be used.

    mmengine's ``pytorch`` and ``slurm`` launchers call
    ``torch.cuda.set_device`` unconditionally (and default to nccl), so on
    a CPU-only machine the group is started here, before the Runner, which
    then sees it as already initialised. For ``slurm`` the variables srun
    sets are read first (:func:`slurm_to_torch_env`).

    Args:
        launcher (str): The ``--launcher`` of the tool.

    Returns:
        bool: Whether a CPU process group was started.
    """
    if launcher not in ('pytorch', 'slurm') or torch.cuda.is_available() or \
            torch_dist.is_initialized():
        return False
    if launcher == 'slurm':
        slurm_to_torch_env()
    torch_dist.init_process_group(
        backend='gloo',
        rank=int(os.environ['RANK']),
        world_size=int(os.environ['WORLD_SIZE']))
    return True


def launch_rank() -> int:
    """This process's rank as the launcher set it, before any process group
    exists (torchrun, slurm or MPI); 0 for a single process."""
    for key in ('RANK', 'SLURM_PROCID', 'OMPI_COMM_WORLD_RANK'):
        if key in os.environ:
            return int(os.environ[key])
    return 0


def close_distributed() -> None:
    """End the process group, once every process has finished.

    Call it after the Runner is released: its DDP model holds the group,
    through reference cycles, and the group's communication threads end
    only when its last holder goes. Left to the interpreter's teardown,
    they are stopped while it dismantles itself, and a process can abort
    there ("terminate called without an active exception", SIGABRT) after
    its work is done, so the launcher reports a failed run. The barrier
    keeps a fast process from tearing down while another still writes
    checkpoints or logs; the collection after it frees the group now.
    """
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.barrier()
        torch_dist.destroy_process_group()
        gc.collect()


def hook_type(hook) -> str:
    kind = hook.get('type') if isinstance(hook, dict) else type(hook)
    return kind if isinstance(kind, str) else getattr(kind, '__name__', '')


def declared_hooks(cfg: Config) -> List:
    """Every hook a config declares: its ``default_hooks`` and
    ``custom_hooks``."""
    return [h for h in (cfg.get('default_hooks') or {}).values() if h] + \
        list(cfg.get('custom_hooks') or [])


def missing_reliability_hooks(cfg: Config) -> List[str]:
    """The hooks of :data:`RELIABILITY_HOOKS` that a config does not declare.

    The tools add no hook themselves; they name the missing ones, so that a
    config says everything that runs.
    """
    declared = {hook_type(h) for h in declared_hooks(cfg)}
    return [h for h in RELIABILITY_HOOKS if h not in declared]


def prepare_cfg(cfg: Config, launcher: str = 'none',
                cpu_distributed: Optional[bool] = None) -> Config:
    """Adjust a loaded config to what the installed libraries can run.

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
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg.get(key)
        # persistent_workers needs worker processes.
        if loader and loader.get('num_workers', 0) == 0 and \
                loader.get('persistent_workers', False):
            loader['persistent_workers'] = False
    return cfg
