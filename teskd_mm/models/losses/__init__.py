from .teskd_loss import TESKDLoss, cross_entropy_any, kd_kl_div

__all__ = ['TESKDLoss', 'cross_entropy_any', 'kd_kl_div']
