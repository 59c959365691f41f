from .cifar import CheckedCIFAR10, CheckedCIFAR100

__all__ = ['CheckedCIFAR10', 'CheckedCIFAR100']
