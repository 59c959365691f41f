"""Non-finite losses stop (or skip) training; fp16 does not overflow."""
import os
import os.path as osp
import re

import textwrap

import pytest
import torch
import torch.nn.functional as F
from mmengine.hooks import Hook

from mmpretrain.registry import HOOKS

from teskd_mm.hooks.non_finite_loss_hook import split_loss_name
from teskd_mm.models.heads.multi_branch_cls_head import BranchOutputs
from teskd_mm.models.losses.teskd_loss import TESKDLoss, kd_kl_div
from teskd_mm.utils import checkpoint_problem

from conftest import tool_in_process, write_tiny_config

# Epoch 1 at lr 0.05; epoch 2 at 5e34, which sends the weights to inf
# within two steps: a real divergence, deterministic under the seed.
DIVERGES = """
train_dataloader = dict(dataset=dict(indices=20))
val_dataloader = dict(batch_size=20)
train_cfg = dict(max_epochs=2)
param_scheduler = dict(milestones=[1], gamma=1e36)
"""


def load(path):
    return torch.load(path, map_location='cpu', weights_only=False)


@pytest.fixture(scope='module')
def diverged(tmp_path_factory, cifar10_mini):
    tmp = tmp_path_factory.mktemp('numerics')
    cfg = write_tiny_config(str(tmp / 'diverges.py'), cifar10_mini, DIVERGES)
    work = str(tmp / 'work')
    with pytest.raises(SystemExit) as info:
        tool_in_process('train.py', cfg, '--work-dir', work)
    return cfg, tmp, work, str(info.value.code)


def test_nonfinite_loss_stops_with_term_branch_and_iteration(diverged):
    _, _, work, message = diverged
    m = re.match(
        r"train.py: error: Non-finite loss at iteration (\d+) \(epoch 2, "
        r"batch (\d)/5\): loss_(\w+?)_(\w+) = (nan|inf|-inf) \(term '(\w+)', "
        r"branch '(\w+)'\)", message)
    assert m, message
    iteration, batch = int(m.group(1)), int(m.group(2))
    assert iteration == 5 + batch
    assert m.group(3, 4) == m.group(6, 7)
    assert re.search(r'the last checkpoint, \S+epoch_1\.pth, is intact',
                     message)
    assert 'NonFiniteLossHook(action=\'skip\')' in message


def test_last_good_checkpoint_is_left_intact(diverged):
    _, _, work, _ = diverged
    last = osp.join(work, 'epoch_1.pth')
    assert open(osp.join(work, 'last_checkpoint')).read() == last
    assert not osp.exists(osp.join(work, 'epoch_2.pth'))
    assert checkpoint_problem(last) is None
    ckpt = load(last)
    assert ckpt['meta']['epoch'] == 1
    assert all(
        torch.isfinite(v).all() for v in ckpt['state_dict'].values()
        if v.is_floating_point())


def test_a_run_whose_every_step_is_skipped_ends_with_an_error(diverged):
    """An infinite feature-loss weight makes every step non-finite: nothing
    is learnt, so no checkpoint is written and the run fails."""
    cfg, tmp, work, _ = diverged
    skip_work = str(tmp / 'skip')
    with pytest.raises(SystemExit) as info:
        tool_in_process(
            'train.py', cfg, '--work-dir', skip_work, '--skip-nonfinite',
            '--cfg-options', 'model.head.loss.fea_weight=inf',
            'train_cfg.max_epochs=1', f'load_from={work}/epoch_1.pth')
    assert re.match(r'train.py: error: Every one of the 5 training steps so '
                    r'far was skipped for a non-finite loss, so the weights '
                    r'are still the initial ones: the checkpoint is not '
                    r'written', str(info.value.code)), info.value.code
    log = open(
        [osp.join(r, f) for r, _, fs in os.walk(skip_work) for f in fs
         if f.endswith('.log')][0]).read()
    assert re.search(
        r"Non-finite loss at iteration 1 \(epoch 1, batch 1/5\): "
        r"loss_fea_student1 = inf \(term 'fea', branch 'student1'\); "
        r'.*Step skipped \(1 so far\)', log)
    assert not [f for f in os.listdir(skip_work) if f.endswith('.pth')]


@HOOKS.register_module(force=True)
class InjectNonFinite(Hook):
    """Makes one training step's loss infinite (an infinite KD weight) and
    records whether that step changed anything in the model's state: the
    weights, the BN statistics, a DTSKD prediction memory."""

    changed = {}  # step -> the state keys it changed

    def __init__(self, step: int) -> None:
        self.step = step

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        model = runner.model
        # The step before is recorded too, to show that steps do change
        # the state (the check is not vacuous).
        if runner.iter in (self.step - 1, self.step):
            self.before = {k: v.clone() for k, v in
                           model.state_dict().items()}
        if runner.iter == self.step:
            self.weight = model.head.loss_module.kd_weight
            model.head.loss_module.kd_weight = float('inf')

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        step = runner.iter  # counted up after this hook
        if step in (self.step - 1, self.step):
            model = runner.model
            if step == self.step:
                model.head.loss_module.kd_weight = self.weight
            after = model.state_dict()
            type(self).changed[step] = sorted(
                k for k, v in self.before.items()
                if not torch.equal(v, after[k]))


@pytest.mark.parametrize('config', ['teskd', 'dtskd'])
def test_a_skipped_step_changes_nothing(config, tmp_path, cifar10_mini):
    """Weights, BN statistics and the DTSKD memory are as before the step;
    the step before it changed all of them."""
    extra = DIVERGES.replace('gamma=1e36', 'gamma=0.1') + textwrap.dedent(
        """
        custom_hooks = [dict(type='EpochSeedHook'),
                        dict(type='NonFiniteLossHook'),
                        dict(type='InjectNonFinite', step=6)]
        """)
    if config == 'dtskd':
        extra += textwrap.dedent("""
        model = dict(
            neck=dict(type='DTSKDNeck'),
            head=dict(type='DTSKDHead',
                      loss=dict(_delete_=True, type='DTSKDLoss')))
        """)
    cfg = write_tiny_config(str(tmp_path / 'tiny.py'), cifar10_mini, extra)
    InjectNonFinite.changed = {}
    tool_in_process('train.py', cfg, '--work-dir', str(tmp_path / 'work'),
                    '--skip-nonfinite')
    assert InjectNonFinite.changed[6] == []
    control = InjectNonFinite.changed[5]
    assert 'head.fc.weight' in control
    assert 'backbone.bn1.running_mean' in control
    if config == 'dtskd':
        assert 'head.loss_module.memory.predictions' in control
    ckpt = load(osp.join(tmp_path, 'work', 'epoch_2.pth'))
    assert ckpt['meta']['nonfinite_skipped'] == 1
    if config == 'dtskd':
        # Every sample's row was written by the steps that were not skipped.
        written = ckpt['state_dict']['head.loss_module.memory.written']
        assert written.sum() == 20


def test_non_finite_weights_are_never_saved(tmp_path, cifar10_mini):
    """A finite loss can still give infinite weights (overflowing
    gradients); the Runner must then refuse to write the checkpoint."""
    from mmengine.config import Config
    from mmengine.runner import Runner

    from teskd_mm.hooks import NonFiniteLossError
    from teskd_mm.utils import prepare_cfg
    cfg = Config.fromfile(
        write_tiny_config(str(tmp_path / 'tiny.py'), cifar10_mini))
    cfg.work_dir = str(tmp_path / 'work')
    runner = Runner.from_cfg(prepare_cfg(cfg))
    save = dict(save_optimizer=False, save_param_scheduler=False)
    runner.save_checkpoint(cfg.work_dir, 'epoch_1.pth', **save)
    with torch.no_grad():
        runner.model.neck.lateral_top.conv.weight[0, 0] = float('inf')
    with pytest.raises(NonFiniteLossError,
                       match=r'weights became non-finite .*\(1 tensors, '
                       r"e.g. \['neck.lateral_top.conv.weight'\]\).*This "
                       'checkpoint is not written'):
        runner.save_checkpoint(cfg.work_dir, 'epoch_2.pth', **save)
    assert sorted(f for f in os.listdir(cfg.work_dir) if '.pth' in f) == \
        ['epoch_1.pth']


def test_loss_names_split_into_term_and_branch():
    assert split_loss_name('loss_kd_student2') == ('kd', 'student2')
    assert split_loss_name('loss_ce_teacher') == ('ce', 'teacher')
    assert split_loss_name('loss') == ('loss', 'model')


# -- fp16 ------------------------------------------------------------------
def test_kd_kl_div_with_half_inputs_does_not_overflow():
    torch.manual_seed(0)
    # Confident logits, as late in training: T^2 * KL is ~1e5, past the
    # largest fp16 number (65504).
    student = (torch.randn(8, 100) * 8000).half().requires_grad_()
    teacher = (torch.randn(8, 100) * 8000).half()
    kl = kd_kl_div(student, teacher, temperature=4.0, eps=1e-7)
    assert kl.dtype == torch.float32 and torch.isfinite(kl)
    assert kl.item() > 65504
    reference = kd_kl_div(student.detach().float(), teacher.float(), 4.0,
                          1e-7)
    assert torch.allclose(kl, reference, rtol=1e-6)
    kl.backward()
    assert student.grad.dtype == torch.float16
    assert torch.isfinite(student.grad).all()
    # The same formula computed in fp16 overflows: the upcast is needed.
    naive = F.kl_div(
        F.log_softmax(student.detach() / 4, 1),
        F.softmax(teacher / 4, 1),
        reduction='batchmean') * 16
    assert naive.dtype == torch.float16 and not torch.isfinite(naive)


def test_teskd_loss_under_fp16_autocast_is_finite_fp32():
    """fp16 outputs under autocast, as AmpOptimWrapper runs the loss.

    CPU autocast keeps ``pow`` and ``sum`` in fp16 (CUDA's moves them to
    fp32), so the summed feature term is the first to overflow here.
    """
    n, c, classes = 128, 512, 100
    g = torch.Generator().manual_seed(0)
    logits = [torch.rand(n, classes, generator=g) * 3000 for _ in range(2)]
    feats = [torch.rand(n, c, generator=g) * 30 for _ in range(2)]
    target = torch.randint(0, classes, (n, ), generator=g)

    def outs(dtype):
        return BranchOutputs(
            teacher_logits=logits[0].to(dtype),
            teacher_feat=feats[0].to(dtype),
            student_logits=(logits[1].to(dtype), ),
            student_feats=(feats[1].to(dtype), ),
            student_ids=(1, ))

    # The same fp16-rounded values, computed from fp32 copies.
    rounded = BranchOutputs(*[
        x.half().float() if torch.is_tensor(x) else
        tuple(t.half().float() for t in x) if torch.is_tensor(x[0]) else x
        for x in outs(torch.float32)
    ])
    with torch.autocast('cpu', dtype=torch.float16):
        half = TESKDLoss()(outs(torch.float16), target)
    full = TESKDLoss()(rounded, target)
    for key in half:
        assert half[key].dtype == torch.float32, key
        assert torch.isfinite(half[key]), key
        assert torch.allclose(half[key], full[key], rtol=1e-3), key
    # The feature sum alone is past fp16's range.
    assert full['loss_fea_student1'] / 1e-7 > 65504


def test_refused_save_names_only_checkpoints_that_exist(tmp_path,
                                                        cifar10_mini):
    """After a save refused for non-finite weights, the run's record of its
    last checkpoint, and the message, still name the previous file."""
    from mmengine.config import Config
    from mmengine.runner import Runner

    from teskd_mm.hooks import NonFiniteLossError, SafeCheckpointHook
    from teskd_mm.utils import prepare_cfg
    cfg = Config.fromfile(write_tiny_config(
        str(tmp_path / 'tiny.py'), cifar10_mini, """
        train_dataloader = dict(dataset=dict(indices=8))
        train_cfg = dict(max_epochs=1)
        """))
    cfg.work_dir = str(tmp_path / 'work')
    runner = Runner.from_cfg(prepare_cfg(cfg))
    runner.train()
    first = osp.join(cfg.work_dir, 'epoch_1.pth')
    hook = next(h for h in runner.hooks if isinstance(h, SafeCheckpointHook))
    with torch.no_grad():
        runner.model.head.fc.weight[0, 0] = float('nan')
    with pytest.raises(NonFiniteLossError,
                       match=rf'the last checkpoint, {re.escape(first)}, is '
                       r'intact'):
        hook._save_checkpoint(runner)  # would be epoch_2.pth
    assert not osp.exists(osp.join(cfg.work_dir, 'epoch_2.pth'))
    assert runner.message_hub.get_info('last_ckpt') == first
    assert open(osp.join(cfg.work_dir, 'last_checkpoint')).read() == first
