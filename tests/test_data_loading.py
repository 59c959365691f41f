"""tools/analysis/data_loading.py: a real run over JPEG files, and its errors.

The images are written here, into pytest's tmp_path; no data set on the
machine is read.
"""
import importlib.util
import os.path as osp

import numpy as np
import pytest

from conftest import ROOT, run_tool

TOOL = 'tools/analysis/data_loading.py'
# A CustomDataset over <data_root>/train/<class>/*.jpg, 2 workers.
CONFIG = 'configs/teskd/resnet18_cifar10jpg.py'


def load_tool():
    spec = importlib.util.spec_from_file_location('data_loading_tool',
                                                  osp.join(ROOT, TOOL))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def jpeg_folder(tmp_path_factory) -> str:
    """2 classes x 4 random 32x32 JPEG images under train/<class>/."""
    from PIL import Image
    root = tmp_path_factory.mktemp('jpegs')
    rng = np.random.default_rng(0)
    for cls in ('cat', 'dog'):
        (root / 'train' / cls).mkdir(parents=True)
        for i in range(4):
            pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / 'train' / cls / f'{i}.jpg')
    return str(root)


def root_option(root: str):
    return ['--cfg-options', f'train_dataloader.dataset.data_root={root}']


def test_times_the_configs_loader_with_its_workers(jpeg_folder):
    proc = run_tool(TOOL, CONFIG, '--batch-size', '2', '--batches', '2',
                    '--warmup', '1', *root_option(jpeg_folder))
    lines = proc.stdout.strip().splitlines()
    assert lines[-2] == (
        f'train_dataloader of {CONFIG}: CustomDataset of 8 images, batch 2, '
        '2 workers, pipeline LoadImageFromFile, RandomCrop, RandomFlip, '
        'PackInputs')
    rate, rest = lines[-1].split(' ', 1)
    assert float(rate) > 0
    assert rest == 'images/s over 2 batches after 1 warm-up'


def test_worker_count_and_partial_last_batch(jpeg_folder, capsys):
    # 8 images in batches of 3: the third batch holds 2; all are counted.
    assert load_tool().main([
        CONFIG, '--num-workers', '0', '--batch-size', '3', '--batches', '3',
        '--warmup', '0', *root_option(jpeg_folder)]) == 0
    out = capsys.readouterr().out
    assert 'CustomDataset of 8 images, batch 3, 0 workers' in out


def test_images_per_second_counts_images():
    batches = [dict(inputs=[0] * 4), dict(inputs=[0] * 4),
               dict(inputs=[0] * 1)]
    assert load_tool().images_per_second(batches, 2, 1) > 0


def test_missing_data_is_one_line_naming_the_path(tmp_path, capsys):
    missing = tmp_path / 'no_such_folder'
    assert load_tool().main([CONFIG, *root_option(missing)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(
        'data_loading.py: error: train_dataloader.dataset cannot be built: '
        'FileNotFoundError')
    assert str(missing / 'train') in err[-1]


def test_too_few_images_is_explained(jpeg_folder, capsys):
    assert load_tool().main([
        CONFIG, '--num-workers', '0', '--batch-size', '4', '--batches',
        '5', *root_option(jpeg_folder)]) == 2
    assert ('train_dataloader gives 2 batches of 4 from 8 images, fewer '
            'than the 7 asked for (2 warm-up + 5 timed)'
            in capsys.readouterr().err)


@pytest.mark.parametrize('argv,message', [
    (['--batches', '0'], '--batches must be at least 1, got 0'),
    (['--warmup', '-1'], '--warmup must be at least 0, got -1'),
    (['--num-workers', '-1'], '--num-workers must be at least 0, got -1'),
    (['--split', 'dev'], "invalid choice: 'dev'"),
])
def test_bad_arguments_are_explained(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        load_tool().parse_args([CONFIG] + argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_missing_config_is_explained(capsys):
    assert load_tool().main(['no/such.py']) == 2
    assert 'config no/such.py does not exist' in capsys.readouterr().err
