"""A run stopped between a checkpoint and the end of its validation ends,
once resumed, as the uninterrupted run does: the same validations, one best
checkpoint, the same one, and the same weights."""
import glob
import json
import os
import os.path as osp
import re

import pytest
import torch
from mmengine.hooks import Hook

from mmpretrain.registry import HOOKS

from conftest import (tool_in_process, train_in_process,
                      write_tiny_config)


class Stopped(RuntimeError):
    """The stand-in for a kill, raised once."""


@HOOKS.register_module()
class StopOnceHook(Hook):
    """Stops the run once, before the validation of ``epoch`` or before the
    ``save``-th checkpoint save; ``flag`` records that it did."""

    def __init__(self, flag: str, epoch: int = 0, save: int = 0) -> None:
        self.flag, self.epoch, self.save, self.saves = flag, epoch, save, 0

    def _stop(self) -> None:
        if not osp.exists(self.flag):
            open(self.flag, 'w').close()
            raise Stopped(self.flag)

    def before_val_epoch(self, runner) -> None:
        if runner.epoch == self.epoch:
            self._stop()

    def before_save_checkpoint(self, runner, checkpoint) -> None:
        self.saves += 1
        if self.saves == self.save:
            self._stop()


def validations(work):
    """Teacher top-1 per validated epoch, later launches replacing earlier
    ones, as a resumed run's log reads."""
    found = {}
    for path in sorted(glob.glob(osp.join(work, '*', 'vis_data',
                                          'scalars.json'))):
        for line in open(path):
            entry = json.loads(line)
            if 'accuracy/top1' in entry:
                found[entry['step']] = entry['accuracy/top1']
    return found


def best_files(work):
    return sorted(n for n in os.listdir(work) if n.startswith('best_'))


@pytest.fixture(scope='module')
def setup(tmp_path_factory, cifar10_mini):
    tmp = tmp_path_factory.mktemp('resume_val')
    cfg = write_tiny_config(
        str(tmp / 'tiny.py'), cifar10_mini, '''
        train_cfg = dict(max_epochs=3)
        train_dataloader = dict(dataset=dict(indices=16))
        ''')
    ref = str(tmp / 'reference')
    train_in_process(cfg, ref)
    return cfg, ref, tmp


@pytest.mark.parametrize('stop', [
    # After epoch_2.pth is written, before its validation ends.
    "dict(type='StopOnceHook', flag='{flag}', epoch=2)",
    # After the first best checkpoint is written, before mmengine saves
    # epoch_1.pth again with the best score (saves: epoch, best, again).
    "dict(type='StopOnceHook', flag='{flag}', save=3)",
])
def test_resumed_run_validates_what_the_stopped_one_did_not(
        setup, stop, cifar10_mini):
    cfg, ref, tmp = setup
    flag = str(tmp / f'flag{len(os.listdir(tmp))}')
    work = flag + '_work'
    # The runtime's hooks kept (EpochSeedHook makes the resume exact).
    stopping = write_tiny_config(flag + '.py', cifar10_mini, f"""
        train_cfg = dict(max_epochs=3)
        train_dataloader = dict(dataset=dict(indices=16))
        custom_hooks = [
            dict(type='EpochSeedHook'), dict(type='NonFiniteLossHook'),
            dict(type='SyncBuffersHook'), {stop.format(flag=flag)}]
        """)
    with pytest.raises(Stopped):
        tool_in_process('train.py', stopping, '--work-dir', work)
    tool_in_process('train.py', stopping, '--work-dir', work, '--resume')
    assert validations(work) == validations(ref)
    assert len(validations(ref)) == 3
    assert best_files(work) == best_files(ref)
    assert len(best_files(ref)) == 1
    for name in ('epoch_3.pth', best_files(ref)[0]):
        mine = torch.load(osp.join(work, name), weights_only=False)
        theirs = torch.load(osp.join(ref, name), weights_only=False)
        for k, v in theirs['state_dict'].items():
            assert torch.equal(mine['state_dict'][k], v), (name, k)


def test_a_resume_at_another_batch_says_so(setup, tmp_path, capsys):
    """The total batch of a resumed run is named when it changes, with the
    learning rate that stays; --auto-scale-lr, which a resume cannot apply,
    is refused then."""
    cfg, ref, _ = setup
    work = str(tmp_path / 'work')
    tool_in_process('train.py', cfg, '--work-dir', work, '--cfg-options',
                    'train_cfg.max_epochs=1')
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        tool_in_process('train.py', cfg, '--work-dir', work, '--resume',
                        '--auto-scale-lr', '--cfg-options',
                        'train_dataloader.batch_size=2')
    assert re.search(
        r'--auto-scale-lr with --resume from \S+epoch_1.pth: the total batch '
        r'changes from 4 \(1 process x 4\) to 2 \(1 process x 2\), but a '
        r'resumed run continues with the optimizer and schedule of the '
        r'checkpoint \(lr 0.05\)', str(info.value.code))
    assert sorted(os.listdir(work)).count('epoch_2.pth') == 0
    tool_in_process('train.py', cfg, '--work-dir', work, '--resume',
                    '--cfg-options', 'train_dataloader.batch_size=2',
                    'train_cfg.max_epochs=2')
    out = capsys.readouterr()
    assert re.search(r'Resuming \S+epoch_1.pth at a total batch of 2 '
                     r'\(1 process x 2\); it was trained at 4 \(1 process '
                     r'x 4\), .* the learning rate in effect stays the '
                     r"checkpoint's, 0.05", out.out + out.err)
    # The same batch: nothing to say.
    tool_in_process('train.py', cfg, '--work-dir', work, '--resume',
                    '--auto-scale-lr', '--cfg-options',
                    'train_dataloader.batch_size=2', 'train_cfg.max_epochs=3')
    out = capsys.readouterr()
    assert 'at a total batch of' not in out.out + out.err


def test_optimizer_state_only_where_resume_needs_it(setup, tmp_path,
                                                    capsys):
    """resume_state='newest' (the runtime's): older epoch checkpoints keep
    the weights, and resuming from one is refused, naming the newest."""
    cfg, ref, _ = setup
    newest = torch.load(osp.join(ref, 'epoch_3.pth'), weights_only=False)
    assert 'optimizer' in newest and 'param_schedulers' in newest
    older = torch.load(osp.join(ref, 'epoch_2.pth'), weights_only=False)
    assert 'optimizer' not in older and 'param_schedulers' not in older
    assert older['meta']['resume_state_dropped'] == ['optimizer',
                                                     'param_schedulers']
    assert older['state_dict'].keys() == newest['state_dict'].keys()
    assert os.path.getsize(osp.join(ref, 'epoch_2.pth')) < \
        0.7 * os.path.getsize(osp.join(ref, 'epoch_3.pth'))
    with pytest.raises(SystemExit) as info:
        tool_in_process('train.py', cfg, '--work-dir', str(tmp_path / 'w'),
                        '--resume', osp.join(ref, 'epoch_2.pth'))
    assert re.search(r'epoch_2.pth holds no optimizer, param_schedulers: '
                     r'that state is kept only in the newest checkpoint of '
                     r'a run, .*use --cfg-options load_from=\S+epoch_2.pth '
                     r'without --resume',
                     str(info.value.code))
