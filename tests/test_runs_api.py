"""teskd_mm.apis.train and test: what the tools run, usable from Python,
with mmpretrain's runner_type."""
import json
import os.path as osp

import pytest
from mmengine.config import Config
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from teskd_mm.apis import build_runner, runs
from teskd_mm.utils import ConfigCheckError

from conftest import write_tiny_config

BUILT = []


@RUNNERS.register_module()
class RecordingRunner(Runner):
    """A runner of the user's, named by ``runner_type``."""

    @classmethod
    def from_cfg(cls, cfg):
        BUILT.append(cfg.work_dir)
        return super().from_cfg(cfg)


@pytest.fixture(scope='module')
def tiny(tmp_path_factory, cifar10_mini):
    return write_tiny_config(
        str(tmp_path_factory.mktemp('api') / 'tiny.py'), cifar10_mini, '''
        train_cfg = dict(max_epochs=1)
        train_dataloader = dict(dataset=dict(indices=8))
        val_dataloader = dict(dataset=dict(indices=8))
        test_dataloader = val_dataloader
        ''')


def test_train_and_test_from_python(tiny, tmp_path):
    cfg = Config.fromfile(tiny)
    cfg.work_dir = str(tmp_path / 'work')
    runs.train(cfg)
    ckpt = osp.join(cfg.work_dir, 'epoch_1.pth')
    assert osp.isfile(ckpt)
    cfg = Config.fromfile(tiny)
    cfg.work_dir = str(tmp_path / 'test_work')
    out = str(tmp_path / 'metrics.json')
    metrics = runs.test(cfg, ckpt, out=out)
    assert json.load(open(out)) == pytest.approx(metrics)
    assert 'accuracy/student1_top1' in metrics


def test_runner_type_names_the_runner(tiny, tmp_path):
    cfg = Config.fromfile(tiny)
    cfg.work_dir = str(tmp_path / 'work')
    cfg.runner_type = 'RecordingRunner'
    assert isinstance(build_runner(cfg), RecordingRunner)
    runs.train(cfg)
    assert BUILT[-1] == cfg.work_dir
    assert osp.isfile(osp.join(cfg.work_dir, 'epoch_1.pth'))


def test_refusals_are_raised_before_anything_is_written(tiny, tmp_path):
    cfg = Config.fromfile(tiny)
    cfg.work_dir = str(tmp_path / 'work')
    cfg.model.head.num_classes = 7
    with pytest.raises(ConfigCheckError, match='num_classes=7'):
        runs.train(cfg)
    assert not osp.exists(cfg.work_dir)
