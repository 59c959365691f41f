from .epoch_seed_hook import EpochSeedHook
from .heap_reuse_hook import HeapReuseHook, reuse_freed_memory
from .non_finite_loss_hook import NonFiniteLossError, NonFiniteLossHook
from .safe_checkpoint_hook import SafeCheckpointHook

__all__ = [
    'EpochSeedHook', 'HeapReuseHook', 'NonFiniteLossError',
    'NonFiniteLossHook', 'SafeCheckpointHook', 'reuse_freed_memory'
]
