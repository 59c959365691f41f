"""mmpretrain's CIFAR data sets, with a clear message when they are missing."""
import os.path as osp

from mmpretrain.datasets import CIFAR10, CIFAR100
from mmpretrain.registry import DATASETS


class _ExplainMissingMixin:
    """Turns a failed download into a message that says where the data go.

    mmpretrain downloads CIFAR into ``data_root`` when it is missing; with no
    route to the download host that fails deep in ``urllib``. This says which
    files are missing, where to put them, and where to get them.
    """

    def load_data_list(self):
        root = self.data_prefix['root']
        try:
            return super().load_data_list()
        except Exception as e:
            if self._check_integrity():
                raise
            why = (f'the download from {self.url} did not work '
                   f'({type(e).__name__}: {e})'
                   if self.download else 'download=False')
            raise FileNotFoundError(
                f'{type(self).__name__}: no intact {self.base_folder}/ under '
                f'{osp.abspath(root)} and {why}. Download '
                f'{self.filename} on a machine with internet access and '
                f'either put it in {osp.abspath(root)} or extract it there, '
                f'so that {osp.join(osp.abspath(root), self.base_folder)} '
                'exists; or set data_root to where it already is.') from e


@DATASETS.register_module()
class CheckedCIFAR10(_ExplainMissingMixin, CIFAR10):
    """``CIFAR10`` that explains where to put the data when they are missing.

    Takes the same arguments as mmpretrain's ``CIFAR10``.
    """


@DATASETS.register_module()
class CheckedCIFAR100(_ExplainMissingMixin, CIFAR100):
    """``CIFAR100`` that explains where to put the data when they are missing.

    Takes the same arguments as mmpretrain's ``CIFAR100``.
    """
