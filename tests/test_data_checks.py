"""Data are checked by what they mean, and options fail before any work.

Each case failed silently or late before: a test split whose class folders
differ from the training ones was scored with shifted labels; an unreadable
image or a validation size that breaks the neck stopped a run mid-epoch;
DTSKD on a ConcatDataset mixed the memory of different images; wrong
option values were taken at face value.
"""
import os
import os.path as osp
import re
import shutil

import pytest
import torch
from mmengine.config import Config

from mmpretrain.registry import MODELS

from teskd_mm.utils import ConfigCheckError, check_config, prepare_cfg

from conftest import ROOT, run_tool, tool_in_process, write_tiny_config


@pytest.fixture(scope='module')
def tiny(tmp_path_factory, cifar10_mini):
    return write_tiny_config(
        str(tmp_path_factory.mktemp('data') / 'tiny.py'), cifar10_mini)


@pytest.fixture
def data(tmp_path, cifar10_mini):
    """A copy of the small image folders to spoil."""
    root = str(tmp_path / 'data')
    shutil.copytree(cifar10_mini, root)
    return root


def refused(cfg_path, root, match, mode='train', **options):
    cfg = Config.fromfile(cfg_path)
    for split in ('train', 'val', 'test'):
        cfg[f'{split}_dataloader'].dataset.data_root = root
    cfg.merge_from_dict(options)
    cfg.work_dir = '/nonexistent/never_written'
    with pytest.raises(ConfigCheckError, match=match) as info:
        check_config(prepare_cfg(cfg), mode)
    return str(info.value)


def test_renamed_class_folder_in_the_test_split(tiny, data):
    os.rename(osp.join(data, 'test', 'airplane'),
              osp.join(data, 'test', 'plane'))
    refused(tiny, data, r"val_dataloader.dataset does not name the classes "
            r"of the training set: it lacks \['airplane'\]; it has "
            r"\['plane'\], which the training set has not\. Its labels would "
            r'be scored against other classes')


def test_missing_class_folder_in_the_test_split(tiny, data):
    shutil.rmtree(osp.join(data, 'test', 'truck'))
    refused(tiny, data, r"val_dataloader.dataset does not name the classes "
            r"of the training set: it lacks \['truck'\]\.")


def test_test_split_against_the_checkpoints_classes(tiny, data, tmp_path):
    """tools/test.py compares with the classes saved at training."""
    model = MODELS.build(Config.fromfile(tiny).model)
    classes = tuple(sorted(os.listdir(osp.join(data, 'train'))))
    ckpt = str(tmp_path / 'epoch_1.pth')
    torch.save(dict(state_dict=model.state_dict(),
                    meta=dict(dataset_meta=dict(classes=classes))), ckpt)
    os.rename(osp.join(data, 'test', 'cat'), osp.join(data, 'test', 'kat'))
    refused(tiny, data, r'test_dataloader.dataset does not name the classes '
            r"of the training set of \S+epoch_1.pth: it lacks \['cat'\]",
            mode='test', load_from=ckpt)


@pytest.mark.parametrize('spoil, problem', [
    (lambda p: open(p, 'wb').close(), r'is empty \(0 bytes\)'),
    (lambda p: open(p, 'w').write('a text, not an image'),
     r'is not an image \(UnidentifiedImageError'),
    (lambda p: open(p, 'r+b').truncate(osp.getsize(p) - 100),
     r'is truncated \(its JPEG end marker is missing\)'),
])
def test_unreadable_image_is_named_before_training(tiny, data, spoil,
                                                   problem):
    path = osp.join(data, 'train', 'dog', '0003.jpg')
    spoil(path)
    refused(tiny, data, rf'train_dataloader.dataset: 1 of its 80 images '
            rf'cannot be read: {re.escape(path)} {problem}.*Remove or '
            'replace them')


def resize_images(folder, size):
    from PIL import Image
    for root, _, files in os.walk(folder):
        for name in files:
            path = osp.join(root, name)
            Image.open(path).resize(size).save(path)


def test_validation_size_that_breaks_the_neck(tiny, data):
    """The validation pipeline keeps each image's size; 36x36 images would
    stop training at the first validation, after a whole epoch."""
    resize_images(osp.join(data, 'test'), (36, 36))
    refused(tiny, data, r'batch of 2 images of 36x36 \(a size '
            r'val_dataloader.dataset gives\): MFMNeck needs every stage at '
            r'twice the size of the next one')


def test_images_of_several_sizes_without_a_resize(tiny, data):
    """Batches would be zero-padded to their largest image: the scores of
    a test split of mixed sizes would change with the batch size."""
    resize_images(osp.join(data, 'test', 'cat'), (64, 64))
    for mode in ('train', 'test'):
        message = refused(
            tiny, data, rf'{"val" if mode == "train" else "test"}'
            r'_dataloader.dataset: its images differ in size '
            r'\(2 sizes, e.g. 32x32: \S+\.jpg; 64x64: \S+/test/cat/0000.jpg\)'
            r' and its pipeline keeps each image\'s size.*Add a resize',
            mode)
        assert '\n' not in message
    # With a resize in the pipeline, the sizes do not matter.
    resize = dict(type='Resize', scale=(32, 32))
    cfg = Config.fromfile(tiny)
    pipeline = [cfg.val_dataloader.dataset.pipeline[0], resize,
                *cfg.val_dataloader.dataset.pipeline[1:]]
    for split in ('train', 'val', 'test'):
        cfg[f'{split}_dataloader'].dataset.data_root = data
    cfg.val_dataloader.dataset.pipeline = pipeline
    cfg.test_dataloader.dataset.pipeline = pipeline
    cfg.work_dir = '/nonexistent/never_written'
    check_config(prepare_cfg(cfg), 'test')


def test_dtskd_refuses_a_concat_dataset(data, tmp_path):
    cfg = Config.fromfile(f'{ROOT}/configs/dtskd/resnet18_cifar100.py')
    part = dict(type='CustomDataset', data_root=data, data_prefix='train',
                pipeline=[dict(type='LoadImageFromFile'),
                          dict(type='PackInputs')])
    cfg.train_dataloader.dataset = dict(type='ConcatDataset',
                                        datasets=[part, part])
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    cfg.merge_from_dict({'model.head.num_classes': 10,
                         'data_preprocessor.num_classes': 10})
    cfg.work_dir = str(tmp_path / 'work')
    with pytest.raises(ConfigCheckError, match=r'DTSKD keys its prediction '
                       r'memory by .*ConcatDataset\) restarts at 0 in each '
                       r'of its parts'):
        check_config(prepare_cfg(cfg), 'train')


def test_dtskd_memory_smaller_than_the_training_set(data, tmp_path):
    cfg = Config.fromfile(f'{ROOT}/configs/dtskd/resnet18_cifar100.py')
    cfg.train_dataloader.dataset = dict(
        type='CustomDataset', data_root=data, data_prefix='train',
        pipeline=[dict(type='LoadImageFromFile'), dict(type='PackInputs')])
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    images = sum(len(files) for _, _, files in
                 os.walk(osp.join(data, 'train')))
    cfg.merge_from_dict({'model.head.num_classes': 10,
                         'model.head.loss.num_samples': images - 1,
                         'data_preprocessor.num_classes': 10})
    cfg.work_dir = str(tmp_path / 'work')
    with pytest.raises(ConfigCheckError, match=(
            rf"DTSKD's prediction memory has num_samples="
            rf'{images - 1} rows, one per training image, but '
            rf'train_dataloader.dataset holds {images} images; set '
            rf'model.head.loss.num_samples={images}')):
        check_config(prepare_cfg(cfg), 'train')
    assert not osp.exists(cfg.work_dir)
    cfg.model.head.loss.num_samples = images
    check_config(prepare_cfg(cfg), 'train')


# -- options ------------------------------------------------------------------
def test_students_given_as_a_number(tiny, cifar10_mini):
    refused(tiny, cifar10_mini, r"The model config cannot be built: MFMNeck "
            r"students=3 is not a non-empty subset of \(1, 2, 3\).*give a "
            r'tuple, e.g. students=\(3,\)', **{'model.neck.students': 3})


def test_out_format_is_checked_before_testing(tiny, tmp_path):
    work = str(tmp_path / 'work')
    with pytest.raises(SystemExit) as info:
        tool_in_process('test.py', tiny, str(tmp_path / 'no.pth'),
                        '--work-dir', work, '--out', 'm.txt')
    assert info.value.code == 2  # argparse's usage error, at once
    assert not osp.exists(work)


def test_amp_without_cuda_is_refused_before_the_work_dir(tiny, tmp_path):
    if torch.cuda.is_available():
        pytest.skip('--amp runs where CUDA is available')
    work = str(tmp_path / 'work')
    proc = run_tool('tools/train.py', tiny, '--work-dir', work, '--amp',
                    check=False)
    assert proc.returncode != 0
    assert 'train.py: error: optim_wrapper is AmpOptimWrapper (--amp, or the '\
        'config), which mmengine runs on a CUDA GPU only, and none is '\
        'available' in proc.stderr
    assert not osp.exists(work)


def test_work_dir_that_cannot_be_made(tiny, tmp_path):
    a_file = tmp_path / 'a_file'
    a_file.write_text('')
    work = str(a_file / 'work')
    with pytest.raises(SystemExit) as info:
        tool_in_process('train.py', tiny, '--work-dir', work)
    assert str(info.value.code) == (
        f'train.py: error: The work dir {work} cannot be written: Not a '
        f'directory ({work}); choose another --work-dir.')


def test_full_disk_while_training_gives_one_line(tiny, tmp_path,
                                                 monkeypatch):
    """The second checkpoint cannot be written: the first stays intact."""
    import errno

    from teskd_mm.utils.checkpoint import files
    real = files.atomic_write
    calls = []

    def full_after_one(path, write):
        if path.endswith('.pth'):
            calls.append(path)
            if len(calls) > 1:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        real(path, write)

    monkeypatch.setattr(files, 'atomic_write', full_after_one)
    work = str(tmp_path / 'work')
    with pytest.raises(SystemExit) as info:
        tool_in_process('train.py', tiny, '--work-dir', work,
                        '--cfg-options', 'train_dataloader.dataset.indices=8',
                        'val_dataloader.dataset.indices=8',
                        'default_hooks.checkpoint.save_best=None')
    first = osp.join(work, 'epoch_1.pth')
    assert str(info.value.code) == (
        f'train.py: error: writing {osp.join(work, "epoch_2.pth")} failed: '
        f'No space left on device; the last checkpoint, {first}, is intact.')
    assert sorted(f for f in os.listdir(work) if f.endswith('.pth')) == \
        ['epoch_1.pth']
