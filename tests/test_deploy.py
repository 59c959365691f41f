"""tools/deploy.py on the full-size model and on inputs it must refuse."""
import os
import os.path as osp
import re

import pytest
import torch
from mmengine.config import Config

from mmpretrain.registry import MODELS

from teskd_mm.apis import DeployError, deploy

from conftest import ROOT, run_tool, write_tiny_config

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
    with pytest.raises(DeployError, match='broken.pth is truncated or '
                       'not a PyTorch checkpoint'):
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


# -- the deployed model is the trained one, whatever config is given ---------
@pytest.fixture(scope='module')
def own_statistics(tmp_path_factory, cifar10_mini):
    """A tiny run trained with its own mean and std on the command line."""
    tmp = tmp_path_factory.mktemp('own_stats')
    cfg = write_tiny_config(
        str(tmp / 'tiny.py'), cifar10_mini, '''
        train_dataloader = dict(dataset=dict(indices=16))
        val_dataloader = dict(dataset=dict(indices=8))
        train_cfg = dict(max_epochs=1)
        ''')
    work = str(tmp / 'work')
    run_tool('tools/train.py', cfg, '--work-dir', work, '--cfg-options',
             'data_preprocessor.mean=[0,0,0]',
             'data_preprocessor.std=[255,255,255]')
    return cfg, work, osp.join(work, 'epoch_1.pth')


def test_config_file_that_differs_from_training_is_refused(own_statistics,
                                                          tmp_path):
    cfg, _, ckpt = own_statistics
    out = str(tmp_path / 'out')
    proc = run_tool('tools/deploy.py', cfg, ckpt, out, check=False)
    assert proc.returncode == 2
    assert re.search(r'deploy: error: \S+tiny.py does not describe the model '
                     r'the checkpoint was trained as: data_preprocessor.mean '
                     r'is \[0, 0, 0\] in training and \[125.269, 122.933, '
                     r'113.863\] here; data_preprocessor.std is \[255, 255, '
                     r'255\] in training', proc.stderr), proc.stderr
    assert not osp.exists(out)


def test_deploy_from_the_work_dir_config_or_with_cfg_options(
        own_statistics, tmp_path):
    cfg, work, ckpt = own_statistics
    dumped = osp.join(work, osp.basename(cfg))
    cfg_out, _ = deploy(dumped, ckpt, str(tmp_path / 'a'))
    assert Config.fromfile(cfg_out).model.data_preprocessor.mean == [0, 0, 0]
    run_tool('tools/deploy.py', cfg, ckpt, str(tmp_path / 'b'),
             '--cfg-options', 'data_preprocessor.mean=[0,0,0]',
             'data_preprocessor.std=[255,255,255]')


def test_deployed_checkpoint_names_the_classes(own_statistics, tmp_path,
                                               cifar10_mini):
    from mmpretrain import ImageClassificationInferencer
    cfg, work, ckpt = own_statistics
    cfg_out, ckpt_out = deploy(
        osp.join(work, osp.basename(cfg)), ckpt, str(tmp_path))
    meta = torch.load(ckpt_out, weights_only=True)['meta']
    assert list(meta['dataset_meta']['classes']) == sorted(
        os.listdir(osp.join(cifar10_mini, 'train')))
    image = osp.join(cifar10_mini, 'test', 'cat', '0000.jpg')
    result = ImageClassificationInferencer(
        cfg_out, pretrained=ckpt_out)(image)[0]
    assert result['pred_class'] in meta['dataset_meta']['classes']


def test_output_folder_that_is_a_file(teskd_ckpt, tmp_path):
    a_file = tmp_path / 'out'
    a_file.write_text('not a folder')
    proc = run_tool('tools/deploy.py', TESKD_CFG, teskd_ckpt,
                    str(a_file / 'deployed'), check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f'deploy: error: OUT_DIR {a_file}/deployed cannot be made: {a_file} '
        'is a file, not a folder; choose another OUT_DIR.')
