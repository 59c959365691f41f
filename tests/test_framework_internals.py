"""The private parts of mmengine and mmpretrain this package still relies
on, where they offer no extension point, each with its reason; each test
fails if the framework changes under it (the versions are pinned in
setup.py: mmengine 0.10.7, mmpretrain 1.2.0).

- ``CheckpointHook._save_checkpoint_with_step(runner, step, meta)``:
  ``SafeCheckpointHook`` wraps it to delete old checkpoints only after the
  new one is written (mmengine deletes first).
- ``BaseModel.parse_losses`` and ``OptimWrapper.update_params``, replaced
  on the run's instances by ``NonFiniteLossHook`` (put back after the run):
  a non-finite loss must be caught between the loss and the step.
- ``DictAction._parse_iterable``: ``tools/benchmark.py`` parses its
  ``--variant`` values as ``--cfg-options`` would.
- ``BaseDataset``-derived CIFAR's ``_check_integrity()`` and
  ``base_folder``: the pre-flight data check asks it before the data set
  would try to download.
- ``mmpretrain/.mim/configs``: where the wheel keeps the stock configs that
  ``mmpretrain::`` names (``tools/teskd_config.py`` reads them as files).
- ``mmengine.config.utils.load``: ``tests/conftest.py`` caches it, as
  mmengine re-reads 340 metafiles for every ``mmpretrain::`` base.
"""
import inspect
import os.path as osp

import mmpretrain
from mmengine.config import DictAction
from mmengine.config import utils as config_utils
from mmengine.hooks import CheckpointHook
from mmengine.model import BaseModel
from mmengine.optim import OptimWrapper

from mmpretrain.datasets import CIFAR10, CIFAR100


def params(fn):
    return list(inspect.signature(fn).parameters)


def test_checkpoint_hook_saves_through_one_method():
    assert params(CheckpointHook._save_checkpoint_with_step) == [
        'self', 'runner', 'step', 'meta']
    # Its two callers: _save_checkpoint (every epoch or iter save) and the
    # save again after a new best.
    source = inspect.getsource(CheckpointHook)
    assert source.count('self._save_checkpoint_with_step(') == 2


def test_the_methods_the_non_finite_hook_wraps():
    assert params(BaseModel.parse_losses)[:2] == ['self', 'losses']
    assert params(OptimWrapper.update_params)[:2] == ['self', 'loss']


def test_dict_action_parses_values_one_by_one():
    assert DictAction._parse_iterable('[1,2]') == [1, 2]
    assert DictAction._parse_iterable('0.5') == 0.5


def test_cifar_integrity_check():
    for cls in (CIFAR10, CIFAR100):
        assert params(cls._check_integrity) == ['self']
        assert isinstance(cls.base_folder, str)


def test_stock_configs_ship_as_files():
    folder = osp.join(osp.dirname(mmpretrain.__file__), '.mim', 'configs')
    assert osp.isfile(osp.join(folder, 'resnet',
                               'resnet18_8xb16_cifar10.py'))


def test_config_utils_load_is_there_to_cache():
    assert callable(config_utils.load)
