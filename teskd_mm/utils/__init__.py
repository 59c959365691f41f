from .runtime import init_cpu_distributed, prepare_cfg, setup_runtime

__all__ = ['init_cpu_distributed', 'prepare_cfg', 'setup_runtime']
