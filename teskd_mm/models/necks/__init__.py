from .dtskd_neck import DTSKDNeck
from .mfm_neck import MFMNeck, MFMOutput

__all__ = ['DTSKDNeck', 'MFMNeck', 'MFMOutput']
