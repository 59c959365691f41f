"""Stop (or skip) a training step whose loss is not finite."""
import math
from typing import Dict, List, Optional, Tuple

import torch
import torch.distributed as torch_dist
from mmengine.dist import is_distributed
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.optim import OptimWrapper

from mmpretrain.registry import HOOKS

from ..models.heads import SelfKDHead
from ..utils.checkpoint import last_checkpoint

ACTIONS = ('stop', 'skip')


class NonFiniteLossError(FloatingPointError):
    """Training stopped on a NaN or infinite loss, or non-finite weights."""


def split_loss_name(name: str) -> Tuple[str, str]:
    """``'loss_kd_student2'`` -> ``('kd', 'student2')``.

    The keys of TESKD's losses are ``loss_<term>_<branch>``; a key without a
    branch (mmpretrain's plain ``loss``) belongs to the whole model.
    """
    body = name[len('loss_'):] if name.startswith('loss_') else name
    if '_' in body:
        term, branch = body.rsplit('_', 1)
        return term, branch
    return body, 'model'


@HOOKS.register_module()
class NonFiniteLossHook(Hook):
    """Check every loss term before it reaches the weights.

    After the model computes its losses and before the backward pass, every
    logged term (``loss_ce_teacher``, ``loss_kd_student2``, ...) and their
    total are checked. If one is NaN or infinite:

    - ``action='stop'`` (default): raise :class:`NonFiniteLossError` naming
      each non-finite term, its branch and the iteration, before the step
      changes any weight. The checkpoints on disk are the last good ones.
    - ``action='skip'``: log the same, skip the backward pass and the
      optimizer step of that batch, and go on. A skipped step changes
      nothing: the BN running statistics its forward pass moved are put
      back, and so are the rows it wrote into a DTSKD prediction memory.
      The number of skipped steps is logged each iteration as
      ``nonfinite_skipped`` and kept in checkpoints. A run whose every step
      so far was skipped has learnt nothing: it stops with an error at its
      first checkpoint instead of saving one.

    Under several processes the verdict is agreed between them, so all
    stop or skip together (one would otherwise wait for the others
    forever). Before a checkpoint is written, the weights are checked too:
    a finite loss can still yield overflowing gradients, and such weights
    must not replace a good checkpoint.

    Args:
        action (str): ``'stop'`` or ``'skip'``. Defaults to ``'stop'``.
    """

    priority = 'VERY_HIGH'

    def __init__(self, action: str = 'stop') -> None:
        if action not in ACTIONS:
            raise ValueError(f'NonFiniteLossHook action={action!r} is not '
                             f'one of {ACTIONS}.')
        self.action = action
        self.skipped = 0
        self._steps = 0  # steps taken by this run, skipped ones included
        self._skip_next_update = False
        self._batch_idx = 0
        self._patched: List[Tuple[object, str]] = []
        self._model = None
        self._buffers: List[Tuple[torch.Tensor, torch.Tensor]] = []

    # -- installing the checks ------------------------------------------
    def before_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        parse_losses = model.parse_losses

        def checked_parse_losses(losses):
            loss, log_vars = parse_losses(losses)
            return self._check(runner, loss, log_vars)

        self._patch(model, 'parse_losses', checked_parse_losses)
        self._model = model
        if self.action == 'skip':
            optim_wrapper = runner.optim_wrapper
            if not isinstance(optim_wrapper, OptimWrapper):
                raise TypeError(
                    'NonFiniteLossHook(action=\'skip\') needs a single '
                    f'OptimWrapper, got {type(optim_wrapper).__name__}; use '
                    'action=\'stop\'.')
            update_params = optim_wrapper.update_params

            def guarded_update_params(loss, *args, **kwargs):
                if self._skip_next_update:
                    self._skip_next_update = False
                    return
                update_params(loss, *args, **kwargs)

            self._patch(optim_wrapper, 'update_params', guarded_update_params)
            # A count, not a quantity to average over the log window.
            runner.log_processor.custom_cfg.append(
                dict(data_src='nonfinite_skipped', method_name='current'))

    def _patch(self, obj, name: str, fn) -> None:
        setattr(obj, name, fn)
        self._patched.append((obj, name))

    def after_train(self, runner) -> None:
        for obj, name in self._patched:
            obj.__dict__.pop(name, None)
        self._patched.clear()
        if self.action == 'skip':
            runner.logger.info(f'NonFiniteLossHook: {self.skipped} training '
                               'step(s) skipped for a non-finite loss.')

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch=None) -> None:
        self._batch_idx = batch_idx
        self._steps += 1
        if self.action == 'skip':
            # What a skipped step's forward pass would move: BN statistics
            # (a few thousand numbers; copied, not recomputed).
            self._buffers = [(b, b.detach().clone())
                             for b in self._model.buffers()]

    def _undo_forward(self) -> None:
        """Put back what the skipped step's forward pass changed."""
        with torch.no_grad():
            for buffer, saved in self._buffers:
                buffer.copy_(saved)
        head = getattr(self._model, 'head', None)
        if isinstance(head, SelfKDHead):
            head.undo_skipped_step()

    # -- the check -------------------------------------------------------
    def _check(self, runner, loss: torch.Tensor,
               log_vars: Dict[str, torch.Tensor]):
        names = list(log_vars)
        values = torch.stack(
            [torch.as_tensor(v).detach().float().reshape(()) for v in
             log_vars.values()])
        bad = (~torch.isfinite(values)).int()
        if is_distributed():
            # Every process must take the same branch below.
            torch_dist.all_reduce(bad)
        if not bool(bad.any()):
            if self.action == 'skip':
                log_vars['nonfinite_skipped'] = self.skipped
            return loss, log_vars

        message = self._describe(runner, names, values, bad.tolist())
        if self.action == 'stop':
            runner.logger.error(message)
            raise NonFiniteLossError(message)
        self.skipped += 1
        self._skip_next_update = True
        self._undo_forward()
        runner.logger.warning(f'{message} Step skipped ({self.skipped} so '
                              'far).')
        kept = {
            k: v
            for k, v, b in zip(names, log_vars.values(), bad.tolist())
            if not b
        }
        kept['nonfinite_skipped'] = self.skipped
        return loss, kept

    def _describe(self, runner, names: List[str], values: torch.Tensor,
                  bad: List[int]) -> str:
        terms = [n for n, b in zip(names, bad) if b and n != 'loss']
        # Only the total: the terms are finite but their sum overflowed.
        terms = terms or ['loss']
        parts = []
        for name in terms:
            value = values[names.index(name)].item()
            shown = 'non-finite on another process' if math.isfinite(
                value) else f'{value}'
            if name == 'loss':
                parts.append(f'the total loss = {shown}')
            else:
                term, branch = split_loss_name(name)
                parts.append(f'{name} = {shown} (term {term!r}, branch '
                             f'{branch!r})')
        where = f'iteration {runner.iter + 1}'
        loop = runner.train_loop
        if hasattr(loop, 'max_epochs'):
            num_batches = len(loop.dataloader)
            where += (f' (epoch {runner.epoch + 1}, batch '
                      f'{self._batch_idx + 1}/{num_batches})')
        if self.action == 'skip':
            return f'Non-finite loss at {where}: {"; ".join(parts)}.'
        return (f'Non-finite loss at {where}: {"; ".join(parts)}. Training '
                'stopped before this step changed any weight; '
                f'{self._last_checkpoint(runner)} Lower the learning rate or '
                'check the data and loss weights; to skip such steps '
                'instead, use NonFiniteLossHook(action=\'skip\') '
                '(tools/train.py --skip-nonfinite).')

    @staticmethod
    def _last_checkpoint(runner) -> str:
        # The file, not the message hub: mmengine records a checkpoint there
        # before it is written, and writes the file only once it is.
        last: Optional[str] = last_checkpoint(runner.work_dir)
        if last:
            return (f'the last checkpoint, {last}, is intact (continue '
                    'from it with --resume).')
        return 'no checkpoint had been written yet.'

    # -- checkpoints -------------------------------------------------------
    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self.action == 'skip' and self._steps and \
                self.skipped >= self._steps:
            message = (
                f'Every one of the {self._steps} training steps so far was '
                'skipped for a non-finite loss, so the weights are still '
                'the initial ones: the checkpoint is not written. Lower the '
                'learning rate or check the data and loss weights.')
            runner.logger.error(message)
            raise NonFiniteLossError(message)
        bad = [
            k for k, v in checkpoint.get('state_dict', {}).items()
            if torch.is_tensor(v) and v.is_floating_point()
            and not bool(torch.isfinite(v).all())
        ]
        if bad:
            message = (
                f'The weights became non-finite by iteration {runner.iter} '
                f'although every loss was finite ({len(bad)} tensors, e.g. '
                f'{bad[:3]}): gradients overflowed. This checkpoint is not '
                f'written; {self._last_checkpoint(runner)} Lower the '
                'learning rate or clip gradients '
                '(optim_wrapper=dict(clip_grad=dict(max_norm=...))).')
            runner.logger.error(message)
            raise NonFiniteLossError(message)
        checkpoint.setdefault('meta', {})['nonfinite_skipped'] = self.skipped

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        self.skipped = int(
            checkpoint.get('meta', {}).get('nonfinite_skipped', 0))
