"""tools/deploy.py on the full-size model and on inputs it must refuse."""
import os
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from mmpretrain.registry import MODELS

from teskd_mm.apis import DeployError, deploy

from conftest import ROOT

TESKD_CFG = f'{ROOT}/configs/teskd/resnet18_cifar100.py'
BASELINE_CFG = f'{ROOT}/configs/baseline/resnet18_cifar100.py'


@pytest.fixture(scope='module')
def teskd_ckpt(tmp_path_factory):
    path = str(tmp_path_factory.mktemp('ckpt') / 'teskd.pth')
    model = MODELS.build(Config.fromfile(TESKD_CFG).model)
    torch.save(dict(state_dict=model.state_dict(), meta=dict(epoch=1)), path)
    return path


def test_deployed_resnet18_has_the_teacher_size(teskd_ckpt, tmp_path):
    cfg_out, ckpt_out = deploy(TESKD_CFG, teskd_ckpt, str(tmp_path))
    stock = MODELS.build(Config.fromfile(cfg_out).model)
    assert sum(p.numel() for p in stock.parameters()) == 11_220_132
    state = torch.load(ckpt_out, weights_only=True)['state_dict']
    stock.load_state_dict(state, strict=True)
    deployed = Config.fromfile(cfg_out)
    assert deployed.model.backbone.out_indices == (3, )
    # The stock data set type replaces this package's checked one.
    assert deployed.train_dataloader.dataset.type == 'CIFAR100'
    assert deployed.val_evaluator.type == 'Accuracy'
    assert 'custom_imports' not in deployed


def test_plain_model_checkpoint_is_refused(tmp_path):
    plain = MODELS.build(Config.fromfile(BASELINE_CFG).model)
    ckpt = str(tmp_path / 'plain.pth')
    torch.save(dict(state_dict=plain.state_dict()), ckpt)
    out = str(tmp_path / 'out')
    with pytest.raises(DeployError, match='not a TESKD model checkpoint'):
        deploy(TESKD_CFG, ckpt, out)
    assert not osp.exists(out)
    with pytest.raises(DeployError, match="head is 'LinearClsHead'.*not a "
                       'TESKD model config'):
        deploy(BASELINE_CFG, ckpt, out)
    assert not osp.exists(out)


def test_truncated_checkpoint_is_refused(teskd_ckpt, tmp_path):
    broken = str(tmp_path / 'broken.pth')
    with open(teskd_ckpt, 'rb') as src, open(broken, 'wb') as dst:
        dst.write(src.read()[:100_000])
    out = str(tmp_path / 'out')
    with pytest.raises(DeployError, match='corrupt or truncated'):
        deploy(TESKD_CFG, broken, out)
    assert not osp.exists(out)


def test_missing_checkpoint_and_existing_outputs(teskd_ckpt, tmp_path):
    with pytest.raises(DeployError, match='does not exist'):
        deploy(TESKD_CFG, str(tmp_path / 'nope.pth'), str(tmp_path))
    cfg_out, ckpt_out = deploy(TESKD_CFG, teskd_ckpt, str(tmp_path))
    before = os.path.getmtime(ckpt_out)
    with pytest.raises(DeployError, match='already exist.*--overwrite'):
        deploy(TESKD_CFG, teskd_ckpt, str(tmp_path))
    assert os.path.getmtime(ckpt_out) == before
    deploy(TESKD_CFG, teskd_ckpt, str(tmp_path), overwrite=True)


def test_checkpoint_of_another_shape_is_refused(teskd_ckpt, tmp_path):
    state = torch.load(teskd_ckpt, weights_only=False)['state_dict']
    state['head.fc.weight'] = torch.zeros(10, 512)
    bad = str(tmp_path / 'ten_classes.pth')
    torch.save(dict(state_dict=state), bad)
    with pytest.raises(DeployError, match=r'head.fc.weight has shape '
                       r'\(10, 512\) but the config builds \(100, 512\)'):
        deploy(TESKD_CFG, bad, str(tmp_path / 'out'))
