"""What users get wrong, and the message each mistake gets.

Every case is refused by the pre-flight check (the one tools/train.py and
tools/test.py run before the Runner) or by deploy, with a message naming
the problem and the value that would fit, and nothing written.
"""
import os
import os.path as osp
import pickle
import re
import shutil

import pytest
import torch
from mmengine.config import Config
from mmengine.runner.checkpoint import save_checkpoint

from mmpretrain.registry import MODELS

from teskd_mm.apis import DeployError, deploy
from teskd_mm.utils import ConfigCheckError, check_config, prepare_cfg

import teskd_mm  # noqa: F401  (registers the components)
from conftest import tool_in_process, write_tiny_config


@pytest.fixture(scope='module')
def tiny(tmp_path_factory, cifar10_mini):
    return write_tiny_config(
        str(tmp_path_factory.mktemp('bad') / 'tiny.py'), cifar10_mini)


def checked(path, mode='train', **options):
    """Load a config with ``options`` merged and run the pre-flight check."""
    cfg = Config.fromfile(path)
    cfg.merge_from_dict(options)
    cfg.work_dir = '/nonexistent/never_written'
    return check_config(prepare_cfg(cfg), mode)


def refused(path, match, mode='train', **options):
    with pytest.raises(ConfigCheckError, match=match) as info:
        checked(path, mode, **options)
    return str(info.value)


def test_tiny_config_passes(tiny):
    checked(tiny)
    checked(tiny, 'test')


# -- the model against itself ---------------------------------------------
@pytest.mark.parametrize('out_indices,got', [((3, ), 1), ((1, 2, 3), 3)])
def test_backbone_stages_not_four(tiny, out_indices, got):
    refused(
        tiny, r'batch of 2 images of 32x32 .*: MFMNeck expects 4 backbone '
        rf'stage outputs .* but got {got}; set the backbone\'s '
        r'out_indices=\(0, 1, 2, 3\)',
        **{'model.backbone.out_indices': out_indices})


def test_backbone_stages_out_of_order():
    from teskd_mm.models.necks import MFMNeck
    neck = MFMNeck((8, 16, 32, 64))
    stages = [torch.zeros(1, c, s, s) for c, s in ((8, 32), (16, 16),
                                                    (64, 4), (32, 8))]
    with pytest.raises(ValueError, match=r'shallow to deep, but their sizes '
                       r'\[\(32, 32\), \(16, 16\), \(4, 4\), \(8, 8\)\] grow'
                       r".*out_indices in increasing order"):
        neck(stages)


def test_stage_channels_disagree_with_neck(tiny):
    refused(
        tiny, r'stages have channels \(8, 16, 32, 64\) but MFMNeck '
        r"in_channels=\(8, 16, 32, 32\); set the neck's in_channels="
        r'\(8, 16, 32, 64\)', **{'model.neck.in_channels': (8, 16, 32, 32)})


def test_last_stage_channels_disagree_with_head(tiny):
    refused(
        tiny, r'last stage has 64 channels but MultiBranchClsHead '
        r"in_channels=512; set the head's in_channels=64",
        **{'model.head.in_channels': 512})


def test_unknown_fusion_mode(tiny):
    refused(
        tiny, r"Unknown MFMNeck fusion 'sum'; choose one of \('mixed', "
        r"'add', 'concat', 'none'\)", **{'model.neck.fusion': 'sum'})


@pytest.mark.parametrize('students', [(0, 1, 2), (4, )])
def test_unknown_student_index(tiny, students):
    refused(tiny, r'students=.* is not a non-empty subset of \(1, 2, 3\)',
            **{'model.neck.students': students})


def test_neck_and_head_students_disagree(tiny):
    refused(
        tiny, r'neck feeds students \(2, 3\) but the head has '
        r'students=\(1, 2, 3\); give both the same',
        **{'model.neck.students': (2, 3)})


# -- the model against the input size --------------------------------------
def test_input_size_whose_stages_do_not_halve(tiny):
    message = refused(
        tiny, r'batch of 2 images of 36x36 .*: MFMNeck needs every stage at '
        r'twice the size of the next one, but stage 3 is \(9, 9\) and stage '
        r"4 is \(5, 5\).* The backbone's total stride is 8; input sizes "
        r'that fit: 32x32, 40x40\.',
        **{'train_dataloader.dataset.pipeline.1.crop_size': 36})
    assert 'RandomCrop' not in message


def test_branch_kernels_that_miss_the_last_stage(tiny):
    refused(
        tiny, r"Student 1's map is \(32, 32\).*kernel must be 8, but it is "
        r"4; set the head's branch_kernels=\(8, 4, 2\)",
        **{'model.head.branch_kernels': (4, 4, 2)})


# -- the model against the data --------------------------------------------
def test_class_count_disagrees_with_data(tiny):
    refused(
        tiny, r'num_classes=100 but train_dataloader.dataset has 10 '
        r'classes; set model.head.num_classes=10',
        **{'model.head.num_classes': 100})


def test_class_count_against_the_test_split(tiny):
    refused(
        tiny, r'num_classes=7 but test_dataloader.dataset has 10 classes',
        'test', **{'model.head.num_classes': 7})


def test_data_root_missing(tiny):
    refused(
        tiny, r"data_root='/no/such/cifar'\): the image folder "
        r'/no/such/cifar/train does not exist',
        **{'train_dataloader.dataset.data_root': '/no/such/cifar'})


def test_data_prefix_wrong(tiny, cifar10_mini):
    refused(
        tiny, r'image folder .*/training does not exist\. .* holds '
        r"\['test', 'train'\]",
        **{'train_dataloader.dataset.data_prefix': 'training'})


def test_images_not_in_class_folders(tiny, cifar10_mini, tmp_path):
    flat = tmp_path / 'flat'
    os.makedirs(flat / 'train')
    for name in ('cat', 'dog'):
        src = osp.join(cifar10_mini, 'train', name, '0000.jpg')
        shutil.copy(src, flat / 'train' / f'{name}.jpg')
    refused(
        tiny, r'holds 2 images directly in it, but CustomDataset without '
        r'an ann_file reads one sub-folder per class',
        **{'train_dataloader.dataset.data_root': str(flat)})


def test_empty_class_folder(tiny, cifar10_mini, tmp_path):
    root = tmp_path / 'data'
    shutil.copytree(cifar10_mini, root)
    os.makedirs(root / 'train' / 'unicorn')
    refused(
        tiny, r"class folders \['unicorn'\] .* hold no images",
        **{'train_dataloader.dataset.data_root': str(root)})


def test_cifar_without_files(tiny, tmp_path):
    refused(
        tiny, r'no intact cifar-10-batches-py/ under .*empty_cifar',
        **{
            'train_dataloader.dataset':
            dict(
                _delete_=True,
                type='CheckedCIFAR10',
                data_root=str(tmp_path / 'empty_cifar'),
                download=False,
                pipeline=[dict(type='PackInputs')])
        })


# -- loss weights ------------------------------------------------------------
@pytest.mark.parametrize('weights, match', [
    (dict(kd_weight=-0.8), r'TESKDLoss kd_weight=-0.8 is negative: that term '
     r'would be maximised instead of minimised; weights must be >= 0'),
    (dict(ce_weight=0, kd_weight=0, fea_weight=0),
     r'TESKDLoss weights .* leave no loss term to train the network'),
])
def test_loss_weights_that_cannot_train(tiny, weights, match):
    refused(tiny, match,
            **{f'model.head.loss.{k}': v for k, v in weights.items()})


# -- checkpoints -------------------------------------------------------------
@pytest.fixture(scope='module')
def tiny_ckpt(tiny, tmp_path_factory):
    """A checkpoint of the tiny model, written by mmengine's writer."""
    model = MODELS.build(Config.fromfile(tiny).model)
    path = str(tmp_path_factory.mktemp('ckpt') / 'epoch_1.pth')
    save_checkpoint(
        dict(meta=dict(epoch=1, iter=20), state_dict=model.state_dict()),
        path)
    return path


def truncated_copy(src, dst, keep=0.5):
    with open(src, 'rb') as f:
        data = f.read()
    with open(dst, 'wb') as f:
        f.write(data[:int(len(data) * keep)])
    return dst


def test_test_checkpoint_truncated(tiny, tiny_ckpt, tmp_path):
    bad = truncated_copy(tiny_ckpt, str(tmp_path / 'epoch_2.pth'))
    refused(tiny, r'The checkpoint .*epoch_2.pth is truncated or not a '
            'PyTorch checkpoint', 'test', load_from=bad)


def test_resume_checkpoint_corrupt(tiny, tiny_ckpt, tmp_path):
    # Same length, damaged in the middle: caught by the CRCs.
    with open(tiny_ckpt, 'rb') as f:
        data = bytearray(f.read())
    data[len(data) // 2:len(data) // 2 + 64] = bytes(64)
    bad = str(tmp_path / 'epoch_3.pth')
    with open(bad, 'wb') as f:
        f.write(data)
    shutil.copy(tiny_ckpt, tmp_path / 'epoch_1.pth')
    refused(
        tiny, r'--resume .*epoch_3.pth is corrupt .*fails its CRC check.*'
        r'newest intact one beside it is .*epoch_1.pth',
        resume=True, load_from=bad)


def test_test_checkpoint_of_another_model(tiny, tmp_path):
    cfg = Config.fromfile(tiny)
    cfg.merge_from_dict({'model.head.num_classes': 7})
    other = MODELS.build(cfg.model)
    path = str(tmp_path / 'seven.pth')
    torch.save(dict(state_dict=other.state_dict()), path)
    refused(
        tiny, r'seven.pth does not belong to this config: .*head.fc.weight '
        r'is \(7, 64\) in the checkpoint and \(10, 64\) in the config',
        'test', load_from=path)


# -- deploy -------------------------------------------------------------------
@pytest.mark.parametrize('content, match', [
    (b'', 'weird.pth is empty'),
    (b'\x89PNG not a checkpoint' * 100,
     'weird.pth is truncated or not a PyTorch checkpoint'),
    (pickle.dumps(['a', 'list']),
     'weird.pth is truncated or not a PyTorch checkpoint'),
    (['a', 'list'], 'holds no state_dict of tensors'),
])
def test_deploy_refuses_what_is_not_a_checkpoint(tiny, tmp_path, content,
                                                 match):
    path = tmp_path / 'weird.pth'
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    out = str(tmp_path / 'out')
    with pytest.raises(DeployError, match=match):
        deploy(tiny, str(path), out)
    assert not osp.exists(out)


def test_deploy_refuses_truncated_mmengine_checkpoint(tiny, tiny_ckpt,
                                                      tmp_path):
    bad = truncated_copy(tiny_ckpt, str(tmp_path / 'cut.pth'), keep=0.9)
    out = tmp_path / 'out'
    os.makedirs(out)
    with pytest.raises(DeployError, match='cut.pth is truncated or '
                       'not a PyTorch checkpoint'):
        deploy(tiny, bad, str(out))
    assert os.listdir(out) == []


# -- through the tools: refused before the Runner, nothing written ----------
def test_train_tool_refuses_before_writing_anything(tiny, tmp_path):
    work = str(tmp_path / 'work')
    with pytest.raises(SystemExit) as info:
        tool_in_process('train.py', tiny, '--work-dir', work,
                        '--cfg-options', 'model.backbone.out_indices=[3]')
    message = str(info.value.code)
    assert message.startswith('train.py: error: The model fails on a batch')
    assert "set the backbone's out_indices=(0, 1, 2, 3)" in message
    assert not osp.exists(work)


def test_test_tool_refuses_a_truncated_checkpoint(tiny, tiny_ckpt, tmp_path):
    bad = truncated_copy(tiny_ckpt, str(tmp_path / 'epoch_9.pth'))
    work = str(tmp_path / 'work')
    with pytest.raises(SystemExit) as info:
        tool_in_process('test.py', tiny, bad, '--work-dir', work)
    assert re.match(r'test.py: error: The checkpoint \S+epoch_9.pth is '
                    'truncated', str(info.value.code))
    assert not osp.exists(work)


def test_deploy_refuses_a_teacher_that_is_not_the_trained_one(
        tiny, tmp_path):
    """ResNet returns its stages in order whatever the order of
    out_indices, so (0, 1, 3, 2) trains the full network; the stock config
    would take stage 2 as the last: another network, refused."""
    cfg = Config.fromfile(tiny)
    cfg.merge_from_dict({'model.backbone.out_indices': (0, 1, 3, 2)})
    cfg_path = str(tmp_path / 'unordered.py')
    cfg.dump(cfg_path)
    path = str(tmp_path / 'epoch_1.pth')
    torch.save(dict(state_dict=MODELS.build(cfg.model).state_dict()), path)
    out = str(tmp_path / 'out')
    with pytest.raises(DeployError, match=r"does not give the trained "
                       r"teacher's logits .*out_indices=\(2,\)"):
        deploy(cfg_path, path, out)
    assert not osp.exists(out)
