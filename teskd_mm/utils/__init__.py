from .preflight import (ConfigCheckError, check_config, checkpoint_problem,
                        resolve_resume)
from .runtime import (atomic_save_checkpoint, atomic_write, close_distributed,
                      init_cpu_distributed, prepare_cfg, setup_runtime,
                      use_atomic_checkpoint_writes)

__all__ = [
    'ConfigCheckError', 'atomic_save_checkpoint', 'atomic_write',
    'check_config', 'checkpoint_problem', 'close_distributed', 'init_cpu_distributed',
    'prepare_cfg', 'resolve_resume', 'setup_runtime',
    'use_atomic_checkpoint_writes'
]
