from .checkpoint import (atomic_write, check_checkpoint_fits,
                         checkpoint_problem, last_checkpoint, read_checkpoint,
                         resolve_resume)
from .errors import ConfigCheckError
from .preflight import check_config
from .runtime import (RELIABILITY_HOOKS, close_distributed,
                      init_cpu_distributed, launch_rank,
                      missing_reliability_hooks,
                      prepare_cfg, setup_step_tool)

__all__ = [
    'ConfigCheckError', 'RELIABILITY_HOOKS', 'atomic_write',
    'check_checkpoint_fits', 'check_config', 'checkpoint_problem',
    'close_distributed', 'init_cpu_distributed', 'last_checkpoint',
    'launch_rank',
    'missing_reliability_hooks', 'prepare_cfg', 'read_checkpoint',
    'resolve_resume', 'setup_step_tool'
]
