"""Per-epoch reseeding, so that a resumed run repeats an uninterrupted one."""
import random

import numpy as np
import torch
from mmengine.hooks import Hook

from mmpretrain.registry import HOOKS


def epoch_seed(seed: int, epoch: int) -> int:
    """A 32-bit seed drawn from ``(seed, epoch)``; distinct per epoch."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


@HOOKS.register_module()
class EpochSeedHook(Hook):
    """Reseed ``random``, numpy and torch at the start of every epoch.

    mmengine seeds once, when the Runner is built; a resumed run starts its
    next epoch from that fresh state, while the uninterrupted run had
    consumed random numbers for every epoch before (augmentations, dropout,
    the data loader's base seed). Reseeding from ``(seed, epoch)`` makes
    each epoch's randomness independent of what ran before, so training
    resumed from an epoch checkpoint gives the same weights, bit for bit on
    CPU, as the run that was never stopped. The seed is the Runner's
    (``randomness.seed``, with the rank added under ``diff_rank_seed``).

    Data-loader workers are covered when they are started per epoch (the
    default, or ``num_workers=0``); ``persistent_workers=True`` keeps their
    random state across epochs, which no checkpoint holds, so resume is
    then only statistically equivalent.
    """

    priority = 'VERY_HIGH'

    def before_train(self, runner) -> None:
        loader = runner.train_loop.dataloader
        if getattr(loader, 'num_workers', 0) > 0 and \
                getattr(loader, 'persistent_workers', False):
            runner.logger.warning(
                'EpochSeedHook: persistent_workers=True keeps the data '
                'workers\' random state across epochs, so a resumed run '
                'will not repeat the augmentations of an uninterrupted one; '
                'set persistent_workers=False for an exact resume.')

    def before_train_epoch(self, runner) -> None:
        seed = epoch_seed(runner.seed, runner.epoch)
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)  # seeds every device
