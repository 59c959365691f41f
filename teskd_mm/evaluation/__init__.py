from .multi_branch_accuracy import MultiBranchAccuracy

__all__ = ['MultiBranchAccuracy']
