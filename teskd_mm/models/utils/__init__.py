from .fast_conv import (can_patchify, conv1x1_rows, conv_module_tail,
                        is_pointwise, mixed_fuse, patchify_conv)
from .prediction_memory import PredictionMemory

__all__ = [
    'PredictionMemory', 'can_patchify', 'conv1x1_rows', 'conv_module_tail',
    'is_pointwise', 'mixed_fuse', 'patchify_conv'
]
