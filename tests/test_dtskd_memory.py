"""PredictionMemory, and the sample_idx that mmpretrain's data sets carry."""
import os.path as osp
import pickle

import numpy as np
import pytest
import torch
import torch.nn as nn

from mmpretrain.datasets import CIFAR100, CustomDataset

from teskd_mm.models.utils import PredictionMemory


def probs(n, heads=4, classes=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(n, heads, classes, generator=g), dim=2)


def test_rows_are_not_written_until_a_step_writes_them():
    memory = PredictionMemory()
    rows, written = memory.read(torch.tensor([0, 3]))
    assert not written.any() and memory.num_rows == 0
    p = probs(2)
    memory.write(torch.tensor([3, 1]), p)
    assert memory.num_rows == 4  # grows to the largest index
    rows, written = memory.read(torch.tensor([1, 2, 3, 9]))
    assert written.tolist() == [True, False, True, False]
    assert torch.equal(rows[0], p[1]) and torch.equal(rows[2], p[0])
    assert rows[1].abs().sum() == 0 and rows[3].abs().sum() == 0
    memory.write(torch.tensor([1]), probs(1, seed=5))
    rows, _ = memory.read(torch.tensor([1, 3]))
    assert torch.equal(rows[0], probs(1, seed=5)[0])
    assert torch.equal(rows[1], p[0])


def test_half_precision_storage_and_its_cost():
    memory = PredictionMemory(num_samples=10, dtype='float16')
    p = probs(3)
    memory.write(torch.tensor([0, 4, 9]), p)
    assert memory.predictions.dtype == torch.float16
    assert memory.predictions.shape == (10, 4, 6)
    rows, _ = memory.read(torch.tensor([0, 4, 9]))
    assert rows.dtype == torch.float32
    torch.testing.assert_close(rows, p, atol=1e-3, rtol=0)
    # The cost figures of the docstring.
    assert PredictionMemory.nbytes(50_000, 4, 100) == 80_050_000
    assert PredictionMemory.nbytes(50_000, 4, 100, 'float16') == 40_050_000
    assert PredictionMemory.nbytes(1_281_167, 4, 1000) == 20_499_953_167


def test_state_dict_round_trip_is_exact():

    class Holder(nn.Module):

        def __init__(self, dtype):
            super().__init__()
            self.fc = nn.Linear(2, 2)
            self.memory = PredictionMemory(num_samples=7, dtype=dtype)

    for dtype in ('float32', 'float16'):
        src = Holder(dtype)
        src.memory.write(torch.tensor([6, 2]), probs(2))
        state = src.state_dict()
        assert state['memory.predictions'].shape == (7, 4, 6)
        assert state['memory.written'].tolist() == \
            [False, False, True, False, False, False, True]
        dst = Holder(dtype)
        # Before its first write a memory still has both entries.
        assert set(dst.state_dict()) == set(state)
        result = dst.load_state_dict(state, strict=True)
        assert not result.missing_keys and not result.unexpected_keys
        assert torch.equal(dst.memory.predictions, src.memory.predictions)
        assert torch.equal(dst.memory.written, src.memory.written)
        # A copy, not a view of the loaded state.
        src.memory.write(torch.tensor([2]), probs(1, seed=3))
        assert not torch.equal(dst.memory.predictions,
                               src.memory.predictions)
    # The memory stays in host memory and is no buffer DDP would broadcast.
    assert not any('memory' in name for name, _ in dst.named_buffers())


def test_clear_errors():
    with pytest.raises(ValueError, match=r"dtype='int8' is not one of"):
        PredictionMemory(dtype='int8')
    with pytest.raises(ValueError, match='num_samples=0 must be a positive'):
        PredictionMemory(num_samples=0)
    memory = PredictionMemory(num_samples=4)
    with pytest.raises(IndexError, match=r'Sample index 4 is beyond.*'
                       r'num_samples=4.*len\(dataset\)'):
        memory.write(torch.tensor([1, 4]), probs(2))
    with pytest.raises(ValueError, match='must be >= 0'):
        memory.read(torch.tensor([-1]))
    memory.write(torch.tensor([1]), probs(1))
    with pytest.raises(ValueError, match=r'holds \(4, 6\).*\(4, 10\)'):
        memory.write(torch.tensor([2]), probs(1, classes=10))
    other = PredictionMemory(num_samples=5)
    with pytest.raises(ValueError, match='has 4 rows but num_samples=5'):
        other.load_state_dict(memory.state_dict())


def test_sample_idx_reaches_the_data_samples_of_custom_dataset(
        cifar10_mini):
    pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='RandomCrop', crop_size=32, padding=4),
        dict(type='PackInputs')
    ]
    ds = CustomDataset(
        data_root=cifar10_mini, data_prefix='train', indices=[3, 17, 40, 75],
        pipeline=pipeline)
    for i in range(len(ds)):
        sample = ds[i]['data_samples']
        # The index in the (sub)set, with the image it names.
        assert sample.sample_idx == i
        assert sample.img_path == ds.get_data_info(i)['img_path']


def test_sample_idx_reaches_the_data_samples_of_cifar(tmp_path):
    """mmpretrain's CIFAR100 reading CIFAR-format files written here.

    Only the md5 check is bypassed: generated files cannot match the
    published sums, and nothing here can download the real ones.
    """
    folder = tmp_path / 'cifar-100-python'
    folder.mkdir()
    rng = np.random.default_rng(0)
    with open(folder / 'train', 'wb') as f:
        pickle.dump(dict(data=rng.integers(0, 255, (6, 3072), np.uint8),
                         fine_labels=[5, 3, 99, 0, 5, 7]), f)
    with open(folder / 'meta', 'wb') as f:
        pickle.dump(dict(fine_label_names=[f'c{i}' for i in range(100)]), f)

    class GeneratedCIFAR100(CIFAR100):

        def _check_integrity(self):
            return all(
                osp.isfile(osp.join(self.data_root, self.base_folder, name))
                for name, _ in self.train_list)

    ds = GeneratedCIFAR100(
        data_root=str(tmp_path), split='train',
        pipeline=[dict(type='RandomCrop', crop_size=32, padding=4),
                  dict(type='RandomFlip', prob=0.5),
                  dict(type='PackInputs')])
    labels = [ds[i]['data_samples'].gt_label.item() for i in range(6)]
    assert labels == [5, 3, 99, 0, 5, 7]
    assert [ds[i]['data_samples'].sample_idx for i in range(6)] == \
        list(range(6))
