"""TESKD and DTSKD for MMPretrain.

Importing this package registers its models, metrics and data sets in
mmpretrain's registries, so configs can name them after
``custom_imports = dict(imports=['teskd_mm'])``.
"""
from .known_warnings import silence_known_warnings

# Before the libraries that print them are imported.
silence_known_warnings()

from . import datasets, evaluation, hooks, models  # noqa: E402,F401
from . import apis  # noqa: E402,F401
from .version import __version__  # noqa: E402

__all__ = ['__version__']
