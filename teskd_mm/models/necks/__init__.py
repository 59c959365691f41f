from .mfm_neck import MFMNeck, MFMOutput

__all__ = ['MFMNeck', 'MFMOutput']
