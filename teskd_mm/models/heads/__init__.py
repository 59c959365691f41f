from .multi_branch_cls_head import (BranchOutputs, MultiBranchClsHead,
                                    StudentBranch)

__all__ = ['BranchOutputs', 'MultiBranchClsHead', 'StudentBranch']
