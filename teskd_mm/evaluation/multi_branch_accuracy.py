"""Top-1 of the teacher, of each student and of their ensemble."""
from typing import List, Sequence

import torch

from mmpretrain.evaluation.metrics import Accuracy
from mmpretrain.registry import METRICS


@METRICS.register_module()
class MultiBranchAccuracy(Accuracy):
    """Accuracy of the teacher, beside that of each student and the ensemble.

    The teacher's figures keep mmpretrain's names (``accuracy/top1`` ...), so
    best-checkpoint rules and reports that read them stay as they are. Where
    the predictions carry ``student_scores`` (see ``MultiBranchClsHead``),
    it adds ``accuracy/student{b}_top{k}`` per student and
    ``accuracy/ensemble_top{k}`` for the mean softmax of teacher and
    students, the figures of the paper's Fig. 3.

    Args:
        topk (int | Sequence[int]): Top-k accuracies to report. Defaults to
            ``(1, )``.
        **kwargs: Other arguments of ``Accuracy``.
    """

    def __init__(self, topk=(1, ), **kwargs) -> None:
        super().__init__(topk=topk, **kwargs)

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        """Store the teacher's and the students' scores of a batch."""
        for data_sample in data_samples:
            result = dict(gt_label=data_sample['gt_label'].cpu(),
                          pred_score=data_sample['pred_score'].cpu())
            if 'student_scores' in data_sample:
                result['student_scores'] = \
                    data_sample['student_scores'].cpu()
                result['student_ids'] = tuple(data_sample['student_ids'])
            self.results.append(result)

    def _topk(self, pred: torch.Tensor, target: torch.Tensor) -> List[float]:
        # One threshold-free accuracy per k.
        acc = self.calculate(pred, target, self.topk, thrs=(None, ))
        return [a[0].item() for a in acc]

    def compute_metrics(self, results: List) -> dict:
        """Compute the accuracies from the gathered results."""
        metrics = super().compute_metrics(results)
        if 'student_scores' not in results[0]:
            return metrics
        target = torch.cat([r['gt_label'] for r in results])
        teacher = torch.stack([r['pred_score'] for r in results])
        students = torch.stack([r['student_scores'] for r in results])
        for i, b in enumerate(results[0]['student_ids']):
            for k, a in zip(self.topk, self._topk(students[:, i], target)):
                metrics[f'student{b}_top{k}'] = a
        ensemble = (teacher + students.sum(dim=1)) / (1 + students.size(1))
        for k, a in zip(self.topk, self._topk(ensemble, target)):
            metrics[f'ensemble_top{k}'] = a
        return metrics
