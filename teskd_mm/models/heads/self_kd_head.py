"""What the tools need to know of a self-distillation head."""
import copy
from typing import Dict

import torch


class SelfKDHead:
    """The interface between a self-distillation head and the tools.

    TESKD's :class:`MultiBranchClsHead` and DTSKD's :class:`DTSKDHead`
    implement it; a third method's head that does is served by deployment,
    pre-flight checks, the non-finite-step hook and t-SNE without changes to
    them, which name no head class. Modules may also declare
    ``resume_only_state`` (state only resuming needs, kept in the newest
    checkpoint only; see ``SafeCheckpointHook``).
    """

    @classmethod
    def deployed_model_cfg(cls, model_cfg: dict) -> dict:
        """The stock ``ImageClassifier`` config the teacher deploys to.

        The default is the teacher of TESKD and DTSKD: the same backbone
        with only its last output, ``GlobalAveragePooling`` and
        ``LinearClsHead`` on the head's ``num_classes`` and ``in_channels``.

        Args:
            model_cfg (dict): The training model's config.
        """
        head = model_cfg.get('head') or {}
        backbone = copy.deepcopy(dict(model_cfg['backbone']))
        out_indices = backbone.get('out_indices')
        if isinstance(out_indices, int):
            out_indices = (out_indices, )
        if out_indices is not None:
            # The teacher reads the last output; deploy checks the logits.
            backbone['out_indices'] = (tuple(out_indices)[-1], )
        stock = dict(
            type='ImageClassifier',
            backbone=backbone,
            neck=dict(type='GlobalAveragePooling'),
            head=dict(
                type='LinearClsHead',
                num_classes=head['num_classes'],
                in_channels=head['in_channels'],
                loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
                topk=head.get('topk', (1, ))))
        for key in ('data_preprocessor', 'train_cfg'):
            if key in model_cfg:
                stock[key] = copy.deepcopy(model_cfg[key])
        return stock

    def branch_features(self, feats) -> Dict[str, torch.Tensor]:
        """The pooled feature of every head, the teacher's first, by name
        (``'teacher'``, ``'student1'`` ...), in eval mode too."""
        raise NotImplementedError

    def undo_skipped_step(self) -> None:
        """Put back what the forward pass of a training step changed, other
        than BN statistics, when that step is skipped (a non-finite loss).
        Nothing by default."""

    def check_training_data(self, dataset_cfg: dict, num_images: int) -> None:
        """Refuse, with a ``ValueError`` naming the fix, training data the
        head cannot learn from correctly. Nothing by default.

        Args:
            dataset_cfg (dict): ``train_dataloader.dataset`` of the config.
            num_images (int): Images in the training set (0 if unknown).
        """
