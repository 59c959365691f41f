from .dtskd_head import DTSKDHead, LinearStudent
from .multi_branch_cls_head import (BranchOutputs, MultiBranchClsHead,
                                    StudentBranch)

__all__ = [
    'BranchOutputs', 'DTSKDHead', 'LinearStudent', 'MultiBranchClsHead',
    'StudentBranch'
]
