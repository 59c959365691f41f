"""DTSKD through tools/train.py, a resumed Runner and tools/deploy.py."""
import json
import os
import os.path as osp
import re
import runpy

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

from mmpretrain.registry import MODELS

from teskd_mm.utils import ConfigCheckError

from conftest import ROOT, run_tool, tool_in_process, write_full_config

MEMORY = 'head.loss_module.memory.'


def write_config(path, data_root):
    """Two epochs of two steps of the shipped DTSKD recipe."""
    return write_full_config(
        path, data_root, 'dtskd/resnet18_cifar100.py', extra="""
        model = dict(head=dict(num_classes=10, loss=dict(num_samples=8)))
        data_preprocessor = dict(num_classes=10)
        _load = dict(type='LoadImageFromFile')
        train_dataloader = dict(
            batch_size=4,
            dataset=dict(
                _delete_=True, type='CustomDataset',
                data_root='{data_root}', data_prefix='train',
                indices=[0, 9, 18, 27, 36, 45, 54, 63],
                pipeline=[_load,
                          dict(type='RandomCrop', crop_size=32, padding=4),
                          dict(type='RandomFlip', prob=0.5,
                               direction='horizontal'),
                          dict(type='PackInputs')]))
        val_dataloader = dict(
            batch_size=4,
            dataset=dict(
                _delete_=True, type='CustomDataset',
                data_root='{data_root}', data_prefix='test',
                indices=[0, 5, 10, 15],
                pipeline=[_load, dict(type='PackInputs')]))
        test_dataloader = val_dataloader
        train_cfg = dict(max_epochs=2)
        default_hooks = dict(checkpoint=dict(interval=1, save_best=None))
        """.replace('{data_root}', data_root))


def memory_of(ckpt):
    state = torch.load(ckpt, map_location='cpu', weights_only=False)
    state = state['state_dict']
    return state[MEMORY + 'predictions'], state[MEMORY + 'written']


@pytest.fixture(scope='module')
def trained(tmp_path_factory, cifar10_mini):
    tmp = tmp_path_factory.mktemp('dtskd_e2e')
    cfg = write_config(str(tmp / 'dtskd_mini.py'), cifar10_mini)
    work = str(tmp / 'work')
    run_tool('tools/train.py', cfg, '--work-dir', work,
             env=dict(OMP_NUM_THREADS='1'))
    return cfg, work, tmp


def test_training_fills_the_memory_and_decays_alpha(trained):
    _, work, _ = trained
    predictions, written = memory_of(osp.join(work, 'epoch_2.pth'))
    # One row per training image, 4 heads, 10 classes, all written.
    assert predictions.shape == (8, 4, 10) and written.all()
    torch.testing.assert_close(predictions.sum(dim=2), torch.ones(8, 4))
    assert predictions.max() < 0.99  # softmax outputs, not one-hot

    scalars = [osp.join(r, f) for r, _, fs in os.walk(work) for f in fs
               if f == 'scalars.json']
    records = [json.loads(line) for line in open(scalars[0])]
    alphas = {r['epoch']: r['hist_alpha'] for r in records
              if 'hist_alpha' in r}
    # 'cos' with E = max_epochs = 2: 0.9 at epoch 0, 0.45 at epoch 1.
    assert alphas == pytest.approx({1: 0.9, 2: 0.45})
    assert all('loss_hist_teacher' in r and 'loss_kd_student3' in r
               for r in records if 'hist_alpha' in r)


def test_memory_is_stored_in_the_newest_checkpoint_only(trained):
    """epoch_1.pth lost its memory when epoch_2.pth was complete; its
    weights are all there."""
    _, work, _ = trained
    older = torch.load(osp.join(work, 'epoch_1.pth'), weights_only=False)
    newest = torch.load(osp.join(work, 'epoch_2.pth'), weights_only=False)
    assert MEMORY + 'predictions' not in older['state_dict']
    # And the optimizer's state (resume_state='newest', the runtime's).
    assert older['meta']['resume_state_dropped'] == [
        MEMORY + 'predictions', MEMORY + 'written', 'optimizer',
        'param_schedulers']
    assert 'optimizer' not in older and 'optimizer' in newest
    assert set(older['state_dict']) == set(newest['state_dict']) - {
        MEMORY + 'predictions', MEMORY + 'written'}


def test_resumed_runner_restores_the_memory_exactly(trained):
    cfg, work, tmp = trained
    ckpt = osp.join(work, 'epoch_2.pth')
    saved = memory_of(ckpt)
    config = Config.fromfile(cfg)
    config.work_dir = str(tmp / 'resumed')
    config.resume, config.load_from = True, ckpt
    config.train_cfg.max_epochs = 3
    config.val_cfg = config.val_dataloader = config.val_evaluator = None
    runner = Runner.from_cfg(config)
    memory = runner.model.head.loss_module.memory
    assert memory.num_rows == 0  # a fresh model has no history
    runner.load_or_resume()
    assert runner.epoch == 2
    assert memory.predictions.dtype == saved[0].dtype
    assert torch.equal(memory.predictions, saved[0])
    assert torch.equal(memory.written, saved[1])

    # Training on reads and rewrites that history.
    runner.train()
    assert runner.epoch == 3
    assert (memory.predictions - saved[0]).abs().amax(dim=(1, 2)).min() > 0
    assert torch.equal(memory.predictions,
                       memory_of(osp.join(config.work_dir,
                                          'epoch_3.pth'))[0])


def test_resume_from_a_checkpoint_without_the_memory_is_refused(trained):
    cfg, work, tmp = trained
    older = osp.join(work, 'epoch_1.pth')
    proc = run_tool('tools/train.py', cfg, '--work-dir', str(tmp / 'old'),
                    '--resume', older, check=False)
    assert proc.returncode != 0
    assert re.search(r'epoch_1.pth holds no head.loss_module.memory.'
                     r'predictions, head.loss_module.memory.written, '
                     r'optimizer, param_schedulers: that state is kept only '
                     r'in the newest checkpoint', proc.stderr), proc.stderr
    assert not osp.exists(str(tmp / 'old'))
    # The Runner itself refuses too, where no tool checks first.
    config = Config.fromfile(cfg)
    config.work_dir = str(tmp / 'old_runner')
    config.resume, config.load_from = True, older
    with pytest.raises(ConfigCheckError, match='that state is kept only in '
                       'the newest checkpoint'):
        Runner.from_cfg(config).train()
    # Stopped before the first step: nothing saved.
    assert not [n for n in os.listdir(config.work_dir) if n.endswith('.pth')]


def test_test_tool_scores_a_dtskd_checkpoint(trained):
    """The check before testing compares the checkpoint with a fresh model,
    whose prediction memory is still empty: that is no mismatch."""
    cfg, work, tmp = trained
    out = str(tmp / 'metrics.json')
    run_tool('tools/test.py', cfg, osp.join(work, 'epoch_2.pth'),
             '--work-dir', str(tmp / 'test'), '--out', out)
    metrics = json.load(open(out))
    assert 0 <= metrics['accuracy/top1'] <= 100
    assert 'accuracy/student3_top1' in metrics


def test_resume_through_the_tool_with_a_growing_memory(trained):
    """num_samples=None (the loss's default: the memory grows as needed)."""
    cfg, _, tmp = trained
    work = str(tmp / 'grow')
    grow = ('--cfg-options', 'model.head.loss.num_samples=None')
    tool_in_process('train.py', cfg, '--work-dir', work, *grow,
                    'train_cfg.max_epochs=1')
    tool_in_process('train.py', cfg, '--work-dir', work, '--resume', *grow)
    logs = [osp.join(r, f) for r, _, fs in os.walk(work) for f in fs
            if f.endswith('.log')]
    assert any('resumed epoch: 1, iter: 2' in open(f).read() for f in logs)
    predictions, written = memory_of(osp.join(work, 'epoch_2.pth'))
    # Rows up to the largest sample index (0 .. 7 in the subset of 8).
    assert predictions.shape == (8, 4, 10) and bool(written.all())


def test_deploy_tool_exports_the_teacher(trained):
    cfg, work, tmp = trained
    ckpt = osp.join(work, 'epoch_2.pth')
    out_dir = str(tmp / 'deployed')
    deploy_main = runpy.run_path(osp.join(ROOT, 'tools', 'deploy.py'))['main']
    assert deploy_main([cfg, ckpt, out_dir]) == 0
    dep_cfg = osp.join(out_dir, 'dtskd_mini_deploy.py')
    dep_ckpt = osp.join(out_dir, 'dtskd_mini_teacher.pth')
    text = open(dep_cfg).read()
    assert 'DTSKD' not in text and 'teskd_mm' not in text

    stock = MODELS.build(Config.fromfile(dep_cfg).model)
    stock.load_state_dict(
        torch.load(dep_ckpt, weights_only=True)['state_dict'], strict=True)
    assert sum(p.numel() for p in stock.parameters()) == 11_168_832 + 5_130
    model = MODELS.build(Config.fromfile(cfg).model)
    model.load_state_dict(
        torch.load(ckpt, weights_only=False)['state_dict'], strict=True)
    x = torch.randn(3, 3, 32, 32)
    stock.eval(), model.eval()
    with torch.no_grad():
        torch.testing.assert_close(stock(x, mode='tensor'),
                                   model(x, mode='tensor'))


@pytest.mark.parametrize('num_samples', [8, None])
def test_a_run_stopped_after_a_best_epoch_resumes(cifar10_mini, tmp_path,
                                                  num_samples):
    """Epoch 1 sets a new best: its best checkpoint drops the memory, and
    epoch_1.pth, which mmengine saves again after the best one, keeps it."""
    cfg = write_config(str(tmp_path / 'dtskd_best.py'), cifar10_mini)
    work = str(tmp_path / 'work')
    tool_in_process('train.py', cfg, '--work-dir', work, '--cfg-options',
                    'train_cfg.max_epochs=1',
                    'default_hooks.checkpoint.save_best=accuracy/top1',
                    f'model.head.loss.num_samples={num_samples}')
    best = [n for n in os.listdir(work) if n.startswith('best_')]
    assert len(best) == 1
    newest = torch.load(osp.join(work, 'epoch_1.pth'), weights_only=False)
    assert MEMORY + 'predictions' in newest['state_dict']
    assert 'resume_state_dropped' not in newest['meta']
    best_ckpt = torch.load(osp.join(work, best[0]), weights_only=False)
    assert MEMORY + 'predictions' not in best_ckpt['state_dict']
    tool_in_process('train.py', cfg, '--work-dir', work, '--resume',
                    '--cfg-options',
                    'default_hooks.checkpoint.save_best=accuracy/top1',
                    f'model.head.loss.num_samples={num_samples}')
    assert torch.equal(
        memory_of(osp.join(work, 'epoch_2.pth'))[1], torch.ones(8,
                                                                dtype=bool))
