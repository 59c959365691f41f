from .dtskd_head import DTSKDHead, LinearStudent
from .multi_branch_cls_head import (BranchOutputs, MultiBranchClsHead,
                                    StudentBranch)
from .self_kd_head import SelfKDHead

__all__ = [
    'BranchOutputs', 'DTSKDHead', 'LinearStudent', 'MultiBranchClsHead',
    'SelfKDHead', 'StudentBranch'
]
