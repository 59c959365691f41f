from .dtskd_loss import DTSKDLoss, historical_alpha
from .teskd_loss import TESKDLoss, cross_entropy_any, kd_kl_div

__all__ = [
    'DTSKDLoss', 'TESKDLoss', 'cross_entropy_any', 'historical_alpha',
    'kd_kl_div'
]
