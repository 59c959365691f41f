"""Checkpoint files: written whole, chosen for resume, checked before use.

Everything this package does with checkpoint files on disk lives here:

- :func:`atomic_write` and the ``'atomic_local'`` file backend, through
  which :class:`~teskd_mm.hooks.SafeCheckpointHook` has mmengine save every
  checkpoint, so that a file appears under its name only once complete;
- :func:`load_checkpoint_file`, the only way a checkpoint is unpickled
  (mmengine's loads included): torch's ``weights_only`` loading with an
  allow-list of the types mmengine's checkpoints hold, so that a file
  cannot run code; :func:`trust_checkpoint` lifts it for one file;
- :func:`saved_config`, the training config a checkpoint carries, read as
  plain data (mmengine would execute it);
- :func:`read_checkpoint`, which checks a checkpoint's integrity and reads
  its structure (keys, shapes, meta) without loading its tensors;
- :func:`resolve_resume`, which picks the checkpoint ``--resume`` continues
  from, and :func:`check_checkpoint_fits`, which compares it with the
  model a config builds.
"""
from .files import (AtomicLocalBackend, atomic_write, checkpoints_in,
                    last_checkpoint, remove_partial_writes)
from .fits import check_checkpoint_fits
from .loading import (CHECKPOINT_GLOBALS, UnsafeCheckpointError,
                      checkpoint_problem, load_checkpoint_file,
                      read_checkpoint, saved_config, trust_checkpoint)
from .resume import (TRAINING_STATE, check_resume_batch, check_resume_state,
                     drop_resume_state, has_resume_only_state,
                     resolve_resume)

__all__ = [
    'AtomicLocalBackend', 'CHECKPOINT_GLOBALS', 'TRAINING_STATE',
    'UnsafeCheckpointError', 'atomic_write', 'check_checkpoint_fits',
    'check_resume_batch', 'check_resume_state', 'checkpoint_problem',
    'checkpoints_in', 'drop_resume_state', 'has_resume_only_state',
    'last_checkpoint', 'load_checkpoint_file', 'read_checkpoint',
    'remove_partial_writes', 'resolve_resume', 'saved_config',
    'trust_checkpoint'
]
