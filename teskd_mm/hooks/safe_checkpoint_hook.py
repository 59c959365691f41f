"""A CheckpointHook whose files a killed run can always resume from."""
from collections import deque
from typing import Optional

from mmengine.dist import is_main_process
from mmengine.hooks import CheckpointHook

from mmpretrain.registry import HOOKS

from ..utils.checkpoint import remove_partial_writes


@HOOKS.register_module()
class SafeCheckpointHook(CheckpointHook):
    """``CheckpointHook`` that never leaves the run without a checkpoint.

    It takes exactly the arguments of mmengine's ``CheckpointHook`` and
    changes three things about how files are written:

    - Every checkpoint goes through the ``'atomic_local'`` file backend
      (:class:`~teskd_mm.utils.checkpoint.AtomicLocalBackend`) unless
      ``backend_args`` names other storage: it appears under its name only
      once complete, so a run killed while saving leaves no truncated file.
    - Checkpoints beyond ``max_keep_ckpts`` are deleted only after the new
      one is written (mmengine deletes first, which with
      ``max_keep_ckpts=1`` can leave none at all).
    - A save that fails (a full disk, or non-finite weights refused by
      ``NonFiniteLossHook``) leaves ``last_ckpt`` naming the previous,
      existing checkpoint.

    Temporary files of a run killed mid-write are removed when training
    starts. The one place this relies on mmengine's private API is
    :meth:`_save_checkpoint_with_step`, which it wraps (calling the
    original) to reorder the deletion.
    """

    def __init__(self,
                 *args,
                 out_dir: Optional[str] = None,
                 backend_args: Optional[dict] = None,
                 **kwargs) -> None:
        if backend_args is None and kwargs.get('file_client_args') is None \
                and '://' not in str(out_dir or ''):
            backend_args = dict(backend='atomic_local')
        super().__init__(
            *args, out_dir=out_dir, backend_args=backend_args, **kwargs)

    def before_train(self, runner) -> None:
        super().before_train(runner)
        if self.max_keep_ckpts > 0:
            # Unbounded: the bound is kept by _save_checkpoint_with_step,
            # which deletes only once the new file exists.
            self.keep_ckpt_ids = deque(self.keep_ckpt_ids)
        if is_main_process():
            for name in remove_partial_writes(str(self.out_dir)):
                runner.logger.info(
                    f'Removed {name}, the partial write of a killed run.')

    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
        keep = self.max_keep_ckpts
        previous = (self.last_ckpt,
                    runner.message_hub.get_info('last_ckpt'))
        # One more slot while saving: mmengine then deletes nothing before
        # the new file exists; the oldest goes below, once it does.
        if keep > 0:
            self.max_keep_ckpts = keep + 1
        try:
            super()._save_checkpoint_with_step(runner, step, meta)
        except BaseException:
            self.last_ckpt = previous[0]
            runner.message_hub.update_info('last_ckpt', previous[1])
            if self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step:
                self.keep_ckpt_ids.pop()
            raise
        finally:
            self.max_keep_ckpts = keep
        if keep <= 0:
            return
        while len(self.keep_ckpt_ids) > keep:
            old = self.keep_ckpt_ids.popleft()
            if is_main_process():
                path = self.file_backend.join_path(
                    self.out_dir, self.filename_tmpl.format(old))
                if self.file_backend.isfile(path):
                    self.file_backend.remove(path)
                elif self.file_backend.isdir(path):
                    self.file_backend.rmtree(path)
        runner.message_hub.update_info('keep_ckpt_ids',
                                       list(self.keep_ckpt_ids))
