from .deploy import DeployError, deploy, stock_model_cfg

__all__ = ['DeployError', 'deploy', 'stock_model_cfg']
