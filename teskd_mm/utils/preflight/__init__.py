"""Check a config before any training or testing starts.

A mistyped config should fail in seconds, with a message that names the
problem and the value that would fit, and before the Runner creates a work
directory or writes a log. :func:`check_config` checks what no component
checks on its own: the data sets (built lazily, no image decoded), the
class counts against the data, one pass of the model on a dummy batch at
the input size each split gives (the components' own checks speak there),
and the checkpoint a run would resume from or test. It writes nothing and
restores the random state.
"""
import contextlib
import random

import numpy as np
import torch
from mmengine.config import Config
from mmengine.dist import get_world_size

from ..checkpoint import (check_checkpoint_fits, check_resume_batch,
                          check_resume_state, resolve_resume)
from ..errors import ConfigCheckError
from .data import check_data, check_same_classes
from .model import (build_model, check_classes, check_teacher_stage,
                    check_training_data, run_dummy_batch, set_find_unused)

__all__ = ['check_config', 'check_data']


@contextlib.contextmanager
def _kept_random_state():
    """Leave the random generators as they were (the Runner seeds later)."""
    states = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])


def check_config(cfg: Config,
                 mode: str = 'train',
                 distributed: bool = False) -> Config:
    """Check a config before the Runner is built; raise on the first fault.

    Checks, in order: every data set the run reads (root, layout, class
    count); the model builds; the head's class count against the data; one
    pass (training: forward and loss, and backward when distributed;
    testing: prediction) on a dummy batch at each split's input size; the
    checkpoint to resume from or test, by its structure. Where DDP would
    find parameters without gradient, ``find_unused_parameters`` is
    switched on.

    Args:
        cfg (Config): The config as the Runner will get it; ``load_from``
            and the DDP wrapper settings may be updated.
        mode (str): ``'train'`` or ``'test'``.
        distributed (bool): Whether several processes will run.

    Returns:
        Config: ``cfg``.

    Raises:
        ConfigCheckError: The first problem found, with the value that fits.
    """
    if mode not in ('train', 'test'):
        raise ValueError(f'mode={mode!r} is not train or test')
    wrapper = (cfg.get('optim_wrapper') or {}).get('type')
    if mode == 'train' and wrapper == 'AmpOptimWrapper' and \
            not torch.cuda.is_available():
        raise ConfigCheckError(
            'optim_wrapper is AmpOptimWrapper (--amp, or the config), which '
            'mmengine runs on a CUDA GPU only, and none is available; train '
            'without --amp, or with optim_wrapper.type=OptimWrapper (fp32).')
    with _kept_random_state():
        infos = check_data(cfg, mode, distributed)
        ckpt = resolve_resume(
            cfg, what='The checkpoint' if mode == 'test' else None)
        used = ckpt is not None and (mode == 'test' or cfg.get('resume'))
        trained = ((ckpt or {}).get('meta') or {}).get('dataset_meta') or {}
        if used and trained.get('classes'):
            check_same_classes(infos, tuple(trained['classes']),
                               f'the training set of {cfg.load_from}')
        model = build_model(cfg)
        check_classes(model, infos)
        if used:
            # On the fresh model: the dummy batch below fills its memory.
            check_checkpoint_fits(
                model, ckpt, cfg.load_from, cfg, exact=mode == 'train')
            if mode == 'train':
                check_resume_state(model, ckpt, cfg.load_from, cfg.work_dir)
                check_resume_batch(cfg, ckpt, cfg.load_from, get_world_size())
        if mode == 'train':
            check_teacher_stage(cfg, model)
            check_training_data(cfg, model, infos)
        unused = run_dummy_batch(
            cfg, model, infos, need_grads=distributed and mode == 'train')
        if distributed:
            set_find_unused(cfg, unused)
    return cfg
