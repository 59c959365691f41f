"""The CIFAR data sets' missing-data message and MultiBranchAccuracy."""

import pytest
import torch

from mmpretrain.registry import DATASETS, METRICS

import teskd_mm  # noqa: F401  (registers the types)


@pytest.mark.parametrize('download', [True, False])
def test_missing_cifar100_says_where_to_put_it(tmp_path, download):
    root = tmp_path / 'cifar100'
    with pytest.raises(FileNotFoundError) as info:
        DATASETS.build(
            dict(type='CheckedCIFAR100', data_root=str(root), split='test',
                 download=download))
    msg = str(info.value)
    assert f'no intact cifar-100-python/ under {root}' in msg
    assert 'cifar-100-python.tar.gz' in msg
    assert f'{root}/cifar-100-python exists' in msg
    assert ('did not work' in msg) == download


def test_multi_branch_accuracy():
    metric = METRICS.build(dict(type='MultiBranchAccuracy', topk=(1, 2)))
    labels = torch.tensor([0, 1, 2, 0])
    eye = torch.eye(3)
    teacher = eye[[0, 1, 2, 1]]  # 3 of 4 right
    student1 = eye[[1, 1, 1, 1]]  # 1 of 4 right
    student3 = eye[[0, 1, 2, 0]]  # all right
    samples = [
        dict(gt_label=labels[i:i + 1], pred_score=teacher[i],
             student_scores=torch.stack([student1[i], student3[i]]),
             student_ids=(1, 3)) for i in range(4)
    ]
    metric.process(None, samples)
    res = metric.evaluate(4)
    assert res['accuracy/top1'] == pytest.approx(75.0)
    assert res['accuracy/student1_top1'] == pytest.approx(25.0)
    assert res['accuracy/student3_top1'] == pytest.approx(100.0)
    # Mean of the three one-hot scores: the majority wins.
    assert res['accuracy/ensemble_top1'] == pytest.approx(75.0)
    assert 'accuracy/student3_top2' in res


def test_multi_branch_accuracy_on_plain_predictions():
    metric = METRICS.build(dict(type='MultiBranchAccuracy'))
    metric.process(None, [
        dict(gt_label=torch.tensor([1]), pred_score=torch.tensor([0.2, 0.8]))
    ])
    assert metric.evaluate(1) == {'accuracy/top1': 100.0}
