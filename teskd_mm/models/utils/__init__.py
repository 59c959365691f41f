from .fast_conv import (can_patchify, conv1x1_rows, is_pointwise, mixed_fuse,
                        norm_act, patchify_conv)
from .prediction_memory import PredictionMemory

__all__ = [
    'PredictionMemory', 'can_patchify', 'conv1x1_rows', 'is_pointwise',
    'mixed_fuse', 'norm_act', 'patchify_conv'
]
