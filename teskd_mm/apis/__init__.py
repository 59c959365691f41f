from .deploy import DeployError, deploy, stock_model_cfg
from .runs import RunError, build_runner, test, train

__all__ = [
    'DeployError', 'RunError', 'build_runner', 'deploy', 'stock_model_cfg',
    'test', 'train'
]
