"""A third self-distillation method plugs into the tools through the
SelfKDHead interface alone: deployment, the pre-flight data check, the
undo of a skipped step and t-SNE's features name no head class."""
import pytest
import torch
from mmengine.config import Config

from mmpretrain.registry import MODELS

from teskd_mm.apis.deploy import stock_model_cfg
from teskd_mm.models.heads import MultiBranchClsHead
from teskd_mm.utils import ConfigCheckError, check_config, prepare_cfg

from conftest import write_tiny_config

UNDONE = []


@MODELS.register_module()
class ThirdMethodHead(MultiBranchClsHead):
    """A head of another method, unknown to the tools."""

    def check_training_data(self, dataset_cfg, num_images):
        if num_images > 50:
            raise ValueError(f'ThirdMethodHead learns from at most 50 '
                             f'images, not {num_images}; use indices=50')

    def undo_skipped_step(self):
        UNDONE.append(True)


@pytest.fixture(scope='module')
def third(tmp_path_factory, cifar10_mini):
    return write_tiny_config(
        str(tmp_path_factory.mktemp('third') / 'third.py'), cifar10_mini, '''
        model = dict(head=dict(type='ThirdMethodHead'))
        ''')


def test_deploys_as_the_stock_model(third):
    cfg = Config.fromfile(third)
    stock = stock_model_cfg(cfg.model)
    assert stock['head']['type'] == 'LinearClsHead'
    assert stock['neck'] == dict(type='GlobalAveragePooling')
    assert stock['backbone']['out_indices'] == (3, )


def test_its_data_check_runs_before_training(third, tmp_path):
    cfg = Config.fromfile(third)
    cfg.work_dir = str(tmp_path / 'work')
    with pytest.raises(ConfigCheckError, match='ThirdMethodHead learns from '
                       'at most 50 images, not 80; use indices=50'):
        check_config(prepare_cfg(cfg), 'train')
    cfg.train_dataloader.dataset.indices = 50
    check_config(prepare_cfg(cfg), 'train')


def test_its_features_and_undo_reach_the_tools(third):
    from teskd_mm.hooks import NonFiniteLossHook
    cfg = Config.fromfile(third)
    model = MODELS.build(cfg.model).eval()
    feats = model.head.branch_features(
        model.neck(model.backbone(torch.randn(2, 3, 32, 32))))
    assert list(feats) == ['teacher', 'student1', 'student2', 'student3']
    hook = NonFiniteLossHook(action='skip')
    hook._model, hook._buffers = model, []
    hook._undo_forward()
    assert UNDONE == [True]
