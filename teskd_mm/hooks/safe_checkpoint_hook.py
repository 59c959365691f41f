"""A CheckpointHook whose files a killed run can always resume from."""
import os.path as osp
from collections import deque
from typing import Optional

from mmengine.dist import broadcast_object_list, is_main_process
from mmengine.hooks import CheckpointHook
from mmengine.runner.checkpoint import save_checkpoint

from mmpretrain.registry import HOOKS

from ..known_warnings import quiet_known_log_lines
from ..utils.checkpoint import (check_resume_state, drop_resume_state,
                                has_resume_only_state, load_checkpoint_file,
                                remove_partial_writes, saved_config)

# The last step whose training-time validation ended, in the work dir.
VALIDATED = 'last_validated'


@HOOKS.register_module()
class SafeCheckpointHook(CheckpointHook):
    """``CheckpointHook`` that never leaves the run without a checkpoint.

    It takes the arguments of mmengine's ``CheckpointHook``, and
    ``resume_state``, and changes how files are written and runs are
    resumed:

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
    - The end of every validation during training is recorded (the file
      ``last_validated`` beside the checkpoints); a run stopped between a
      checkpoint and the end of its validation validates that step first
      when resumed, so its best checkpoint and its log are those of the
      uninterrupted run.
    - State that only resuming needs, which modules declare in their
      ``resume_only_state`` (the DTSKD prediction memory: 80 MB for
      CIFAR-100, 20 GB for ImageNet), is kept in the newest epoch (or iter)
      checkpoint only: it is left out of best checkpoints and removed from
      the previous one once the new one is complete. Resuming from a
      checkpoint without it is refused before training (see
      :func:`~teskd_mm.utils.checkpoint.check_resume_state`). With
      ``resume_state='newest'`` the optimizer's and the parameter
      schedulers' state are kept there only too (SGD with momentum: as
      large as the weights); older epoch checkpoints keep the weights and
      meta, for testing, deploying and ``load_from``.

    Temporary files of a run killed mid-write are removed when training
    starts. The one place this relies on mmengine's private API is
    :meth:`_save_checkpoint_with_step`, which it wraps (calling the
    original) to reorder the deletion.

    Args:
        resume_state (str): ``'all'``: every epoch (or iter) checkpoint
            keeps the optimizer's and schedulers' state, as mmengine's hook
            does; ``'newest'``: only the newest does. Defaults to ``'all'``.
        *args, **kwargs: The arguments of ``CheckpointHook``.
    """

    def __init__(self,
                 *args,
                 out_dir: Optional[str] = None,
                 backend_args: Optional[dict] = None,
                 resume_state: str = 'all',
                 **kwargs) -> None:
        if resume_state not in ('all', 'newest'):
            raise ValueError(
                f'SafeCheckpointHook resume_state={resume_state!r} is not '
                "'all' (every epoch checkpoint keeps the optimizer's and "
                "schedulers' state, as mmengine's) or 'newest' (only the "
                'newest does).')
        self.resume_state = resume_state
        if backend_args is None and kwargs.get('file_client_args') is None \
                and '://' not in str(out_dir or ''):
            backend_args = dict(backend='atomic_local')
        super().__init__(
            *args, out_dir=out_dir, backend_args=backend_args, **kwargs)
        self._step_save = False  # an epoch/iter save, not a best one
        self._training = False  # validations of runner.val() are not marked
        self._loaded: Optional[dict] = None  # the meta of a loaded checkpoint

    def before_run(self, runner) -> None:
        super().before_run(runner)
        # The checkpoint code of mmengine 0.10.7 logs its own deprecations.
        quiet_known_log_lines(runner.logger)

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
        self._training = True
        step = runner.epoch if self.by_epoch else runner.iter
        if step and self._loaded is not None:
            check_resume_state(runner.model, self._loaded,
                               runner.cfg.get('load_from') or
                               'the checkpoint', runner.work_dir)
        if step == 0:
            # A fresh run: a record left by an earlier run is not its own.
            if is_main_process() and self.file_backend.isfile(
                    self._validated_file):
                self.file_backend.remove(self._validated_file)
        elif self._validation_missing(runner, step):
            unit = 'epoch' if self.by_epoch else 'iteration'
            runner.logger.info(
                f'The checkpoint of {unit} {step} was written but its '
                'validation did not end before the run stopped: validating '
                'it now, as the uninterrupted run did.')
            runner.val_loop.run()

    def after_train(self, runner) -> None:
        self._training = False
        super().after_train(runner)

    @property
    def _validated_file(self) -> str:
        return self.file_backend.join_path(str(self.out_dir), VALIDATED)

    def _validation_missing(self, runner, step: int) -> bool:
        """Whether the train loop validates after ``step`` and the record of
        that validation is missing (the same answer on every process)."""
        loop = runner.train_loop
        last = runner.max_epochs if self.by_epoch else runner.max_iters
        due = runner.val_loop is not None and \
            step >= getattr(loop, 'val_begin', 1) and \
            (step % getattr(loop, 'val_interval', 1) == 0 or step == last)
        missing = [False]
        if due and is_main_process():
            done = self.file_backend.get_text(self._validated_file) \
                if self.file_backend.isfile(self._validated_file) else ''
            missing[0] = not done.strip().isdigit() or int(done) < step
        broadcast_object_list(missing)
        return due and missing[0]

    def after_val_epoch(self, runner, metrics) -> None:
        super().after_val_epoch(runner, metrics)
        # Recorded last, after the best checkpoint and mmengine's save of
        # the step's checkpoint that follows it: a run stopped before this
        # line validates that step again when resumed (before_train).
        if self._training and is_main_process():
            step = runner.epoch if self.by_epoch else runner.iter
            self.file_backend.put_text(str(step), self._validated_file)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        # Also where the Runner is used without the tools' pre-flight check:
        # mmengine's resume would execute a config text in the meta next.
        saved_config(checkpoint, runner.cfg.get('load_from') or
                     'the checkpoint')
        # Whether it resumes shows in before_train (the loop's step is set).
        self._loaded = dict(meta=checkpoint.get('meta') or {})

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        # What a resume compares its own batch with (check_resume_batch).
        loader = runner.train_dataloader
        if getattr(loader, 'batch_size', None):
            checkpoint['meta'] = dict(
                checkpoint.get('meta') or {},
                batch=dict(per_process=int(loader.batch_size),
                           processes=int(runner.world_size)))
        if not self._step_save:
            drop_resume_state(runner.model, checkpoint)

    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
        keep = self.max_keep_ckpts
        previous = (self.last_ckpt,
                    runner.message_hub.get_info('last_ckpt'))
        self._step_save = True
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
            self._step_save = False
        # Only a file of this run's own folder: a run resumed from another
        # work dir leaves that one's files as they are.
        if is_main_process() and previous[1] and \
                previous[1] != self.last_ckpt and \
                osp.dirname(osp.abspath(previous[1])) == \
                osp.abspath(str(self.out_dir)):
            self._drop_resume_state_of(runner, previous[1])
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

    def _drop_resume_state_of(self, runner, path: str) -> None:
        """Rewrite an older checkpoint without its resume-only state."""
        newest_only = self.resume_state == 'newest'
        if not (has_resume_only_state(runner.model) or newest_only) or \
                not self.file_backend.isfile(path):
            return
        ckpt = load_checkpoint_file(path)
        if drop_resume_state(runner.model, ckpt, newest_only):
            save_checkpoint(ckpt, path, backend_args=self.backend_args)
