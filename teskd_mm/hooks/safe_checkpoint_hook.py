"""A CheckpointHook whose files a killed run can always resume from."""
import os
import os.path as osp
import re

from mmengine.dist import is_main_process
from mmengine.hooks import CheckpointHook

from mmpretrain.registry import HOOKS

from ..utils.runtime import atomic_write, use_atomic_checkpoint_writes

# What atomic_write leaves behind when its process is killed mid-write.
PARTIAL = re.compile(r'^\.(.+\.pth|last_checkpoint)\.\d+\.tmp$')


@HOOKS.register_module()
class SafeCheckpointHook(CheckpointHook):
    """``CheckpointHook`` that never leaves the run without a checkpoint.

    mmengine's hook deletes the oldest checkpoint (beyond
    ``max_keep_ckpts``) *before* writing the new one, writes the new one
    straight to its final name and rewrites ``last_checkpoint`` in place. A
    run killed while saving can thus be left with a truncated newest
    checkpoint, or with ``max_keep_ckpts=1`` with none at all. This hook
    writes the new checkpoint atomically (a temporary file renamed when
    complete), then ``last_checkpoint`` (atomically too), and only then
    deletes old checkpoints, so ``last_checkpoint`` always names a complete
    file. It takes exactly the arguments of ``CheckpointHook``.
    """

    def before_train(self, runner) -> None:
        # Also when the Runner is built without the tools' setup_runtime.
        use_atomic_checkpoint_writes()
        super().before_train(runner)
        if is_main_process() and osp.isdir(self.out_dir):
            for name in os.listdir(self.out_dir):
                if PARTIAL.match(name):
                    runner.logger.info('Removing the partial write '
                                       f'{name} of a killed run.')
                    os.remove(osp.join(self.out_dir, name))

    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
        stale = []
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids and
                                            self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                stale.append(self.keep_ckpt_ids.popleft())
            self.keep_ckpt_ids.append(step)
            # Saved with the checkpoint, as mmengine does.
            runner.message_hub.update_info('keep_ckpt_ids',
                                           list(self.keep_ckpt_ids))

        ckpt_filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir,
                                                     ckpt_filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        runner.save_checkpoint(
            self.out_dir,
            ckpt_filename,
            self.file_client_args,
            save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler,
            meta=meta,
            by_epoch=self.by_epoch,
            backend_args=self.backend_args,
            **self.args)
        if not is_main_process():
            return
        last = str(self.last_ckpt)
        atomic_write(
            osp.join(runner.work_dir, 'last_checkpoint'),
            lambda f: f.write(last.encode()))
        for old in stale:
            path = self.file_backend.join_path(self.out_dir,
                                               self.filename_tmpl.format(old))
            if self.file_backend.isfile(path):
                self.file_backend.remove(path)
            elif self.file_backend.isdir(path):
                self.file_backend.rmtree(path)
