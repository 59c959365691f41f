"""TESKD and DTSKD for MMPretrain.

Importing this package registers its models, metrics and data sets in
mmpretrain's registries, so configs can name them after
``custom_imports = dict(imports=['teskd_mm'])``.
"""
from . import datasets, evaluation, hooks, models  # noqa: F401
from . import apis  # noqa: F401
from .version import __version__

__all__ = ['__version__']
