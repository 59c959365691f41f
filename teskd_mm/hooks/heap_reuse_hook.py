"""Reuse of freed CPU memory between training steps (glibc's malloc)."""
import ctypes
import ctypes.util
import warnings
from typing import Optional

from mmengine.hooks import Hook

from mmpretrain.registry import HOOKS

from ..utils.runtime import declared_hooks, hook_type

# mallopt() parameters, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# mallopt() takes an int: thresholds up to 2 GiB - 1 byte.
MAX_MB = (2**31 - 1) // 2**20


def check_thresholds(mmap_threshold_mb: int,
                     trim_threshold_mb: int) -> None:
    """Refuse thresholds that ``mallopt`` cannot take, naming the range."""
    for name, value in (('mmap_threshold_mb', mmap_threshold_mb),
                        ('trim_threshold_mb', trim_threshold_mb)):
        if type(value) is not int or not 1 <= value <= MAX_MB:
            raise ValueError(
                f'HeapReuseHook: {name}={value!r} must be a whole number of '
                f'MiB from 1 to {MAX_MB} (mallopt takes an int of bytes).')


def reuse_freed_memory(mmap_threshold_mb: int,
                       trim_threshold_mb: int) -> Optional[str]:
    """Have malloc keep freed blocks up to the given sizes for reuse.

    Args:
        mmap_threshold_mb (int): Blocks up to this size (MiB) come from the
            heap, whose freed memory is reused, instead of fresh mappings.
        trim_threshold_mb (int): Free memory at the top of the heap is kept
            up to this size (MiB) instead of being handed back.

    Returns:
        str | None: None when both are set; else why not (no glibc).
    """
    check_thresholds(mmap_threshold_mb, trim_threshold_mb)
    path = ctypes.util.find_library('c')
    try:
        mallopt = ctypes.CDLL(path).mallopt
    except (OSError, AttributeError, TypeError):
        return f'the C library ({path}) has no mallopt; only glibc does'
    for param, mb in ((_M_MMAP_THRESHOLD, mmap_threshold_mb),
                      (_M_TRIM_THRESHOLD, trim_threshold_mb)):
        if mallopt(param, mb * 2**20) != 1:
            return f'mallopt({param}, {mb} MiB) was refused by the C library'
    return None


def reuse_as_declared(cfg) -> Optional[dict]:
    """Apply a config's :class:`HeapReuseHook` now, as the Runner would.

    For tools that time or profile a config's training step outside the
    Runner. Returns the hook's settings, or None when the config does not
    declare it (or the C library cannot take it).
    """
    for hook in declared_hooks(cfg):
        if hook_type(hook) == HeapReuseHook.__name__:
            hook = HOOKS.build(dict(hook)) if isinstance(hook, dict) else hook
            settings = dict(mmap_threshold_mb=hook.mmap_threshold_mb,
                            trim_threshold_mb=hook.trim_threshold_mb)
            why_not = reuse_freed_memory(**settings)
            if why_not:  # declared but not in force: say so
                warnings.warn(f'HeapReuseHook does nothing: {why_not}.')
                return None
            return settings
    return None


@HOOKS.register_module()
class HeapReuseHook(Hook):
    """Keep freed CPU memory for the next step instead of handing it back.

    glibc's malloc serves each block over its mmap threshold (32 MiB at
    most, by default) with a fresh mapping and unmaps it when it is freed.
    A training step frees and allocates the same activations every
    iteration, and TESKD's neck works on large maps (512 channels at 32x32,
    134 MB at batch 64 on CIFAR): every step then faults each of them in
    again, 4 KiB page by page, each page zero-filled by the kernel. Raising
    the mmap and trim thresholds lets malloc reuse the memory instead;
    the computation is untouched. The cost is resident memory: what is
    freed stays with the process, and the heap fragments, so the peak grows
    (README, Performance, gives both, measured). With glibc before 2.38 a
    freed block of exactly one tensor's size cannot serve the next 64-byte
    aligned request of that size, so the heap grows for the first few
    steps before it settles.

    It applies to the whole process from ``before_run`` on and is not
    undone; data-loader workers started later inherit it. On a GPU the
    activations live in CUDA's caching allocator, which reuses memory
    already. Where the C library is not glibc, the hook logs why it does
    nothing.

    Args:
        mmap_threshold_mb (int): Blocks up to this size come from the
            reusable heap. Defaults to 1024.
        trim_threshold_mb (int): Free memory at the top of the heap kept
            for reuse. Defaults to 1024.
    """

    priority = 'VERY_HIGH'

    def __init__(self, mmap_threshold_mb: int = 1024,
                 trim_threshold_mb: int = 1024) -> None:
        # Checked when the Runner builds its hooks, before anything runs.
        check_thresholds(mmap_threshold_mb, trim_threshold_mb)
        self.mmap_threshold_mb = mmap_threshold_mb
        self.trim_threshold_mb = trim_threshold_mb

    def before_run(self, runner) -> None:
        why_not = reuse_freed_memory(self.mmap_threshold_mb,
                                     self.trim_threshold_mb)
        if why_not:
            runner.logger.warning(f'HeapReuseHook does nothing: {why_not}.')
