"""tools/teskd_config.py: TESKD added to stock mmpretrain configs in one
command, whose teacher deploys as the stock network.

Each case runs the real tool on a stock config, trains the written config
for one step at batch 2 and deploys it: the deployed model must have the
stock model's parameters and give its logits for the same weights. The
default suite covers a CIFAR ResNet and a mobile network whose teacher
reads a late layer, a smaller fused width, and every refusal; the other
stock families (ResNet-50, ResNeXt, SE-ResNet, Res2Net, RegNet, EfficientNet,
Swin) run with ``pytest -m slow``.
"""
import os
import os.path as osp
import re
import runpy

import pytest
import torch
from mmengine.config import Config

from mmpretrain.registry import MODELS

from teskd_mm.apis.deploy import stock_model_cfg
from teskd_mm.apis.teskd_config import resolve_config

from conftest import (ROOT, expected_loss_keys, n_params, run_tool,
                      train_one_step)

FAST = {
    'resnet/resnet18_8xb16_cifar10.py': (0, 1, 2, 3),
    'mobilenet_v2/mobilenet-v2_8xb32_in1k.py': (1, 2, 4, 7),
}
SLOW = {
    'efficientnet/efficientnet-b0_8xb32_in1k.py': (2, 3, 4, 6),
    'resnet/resnet50_8xb32_in1k.py': (0, 1, 2, 3),
    'resnext/resnext50-32x4d_8xb32_in1k.py': (0, 1, 2, 3),
    'seresnet/seresnet50_8xb32_in1k.py': (0, 1, 2, 3),
    'res2net/res2net50-w14-s8_8xb32_in1k.py': (0, 1, 2, 3),
    'regnet/regnetx-400mf_8xb128_in1k.py': (0, 1, 2, 3),
    'swin_transformer/swin-tiny_16xb64_in1k.py': (0, 1, 2, 3),
}
REFUSED = {
    'convnext/convnext-tiny_32xb128_in1k.py':
    r'The stock model \(ConvNeXt with LinearClsHead\) has no neck: .*'
    r'\(ConvNeXt pools and then normalises, gap_before_final_norm=True\)',
    'deit/deit-tiny_4xb256_in1k.py':
    r'The stock model \(VisionTransformer with VisionTransformerClsHead\) '
    r'has no neck: its head reads the class token of the last block',
    'mobilenet_v3/mobilenet-v3-large_8xb128_in1k.py':
    r"The stock head is 'StackedLinearClsHead', where TESKD's teacher "
    r'classifies with one Linear',
    'hrnet/hrnet-w18_4xb32_in1k.py':
    r"The stock model's neck is \['HRFuseScales', 'GlobalAveragePooling'\]",
    'densenet/densenet121_4xb256_in1k.py':
    r'gives no output of 56x56 before output 0 .*not larger, whatever the '
    r'input size',
}


class Result:
    """What the tool returned and printed."""

    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def write(base, tmp_path, *options, capsys=None):
    """Run the tool's main in this process (the imports are paid), writing
    into a folder that does not exist yet, as in a fresh clone."""
    out = str(tmp_path / 'my_configs' /
              (osp.splitext(osp.basename(base))[0] + '.py'))
    main = runpy.run_path(osp.join(ROOT, 'tools', 'teskd_config.py'))['main']
    capsys.readouterr()
    code = main([f'mmpretrain::{base}', out, *options])
    printed = capsys.readouterr()
    return out, Result(code, printed.out, printed.err)


# Swin's windows (7x7) need its own 224 px; 64 px serves the others.
SIZES = {'swin_transformer/swin-tiny_16xb64_in1k.py': 224}


def check_trains_and_deploys(base, out, tmp_path):
    cfg = Config.fromfile(out)
    side = SIZES.get(base, 64)
    model, losses, changed = train_one_step(cfg, size=(side, side))
    assert set(losses) == expected_loss_keys(cfg.model.head) | {'loss'}
    assert all(changed)
    # The deployed teacher is the stock network, weight for weight.
    stock_cfg = Config.fromfile(resolve_config(f'mmpretrain::{base}'))
    stock = MODELS.build(stock_cfg.model)
    teacher = MODELS.build(stock_model_cfg(cfg.model))
    assert n_params(teacher) == n_params(stock)
    state = {k: v for k, v in model.state_dict().items()
             if k in teacher.state_dict()}
    teacher.load_state_dict(state, strict=True)
    stock.load_state_dict(state, strict=True)
    model.eval(), teacher.eval(), stock.eval()
    x = torch.randn(2, 3, side, side)
    with torch.no_grad():
        want = model(x, mode='tensor')
        torch.testing.assert_close(teacher(x, mode='tensor'), want)
        torch.testing.assert_close(stock(x, mode='tensor'), want)


def run_case(base, expected, tmp_path, capsys):
    out, proc = write(base, tmp_path, capsys=capsys)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r'out_indices: four outputs that halve \(.*\), the '
                     'last the one the stock head reads', proc.stdout)
    text = open(out).read()
    assert f"_base_ = 'mmpretrain::{base}'" in text
    assert f'backbone=dict(out_indices={expected})' in text
    check_trains_and_deploys(base, out, tmp_path)


@pytest.mark.parametrize('base', list(FAST))
def test_stock_config(base, tmp_path, capsys):
    run_case(base, FAST[base], tmp_path, capsys)


@pytest.mark.slow
@pytest.mark.parametrize('base', list(SLOW))
def test_stock_config_slow(base, tmp_path, capsys):
    run_case(base, SLOW[base], tmp_path, capsys)


@pytest.mark.parametrize('base', list(REFUSED))
def test_refused_with_the_reason(base, tmp_path, capsys):
    out, proc = write(base, tmp_path, capsys=capsys)
    assert proc.returncode == 2
    assert re.search(r'teskd_config: error: .*' + REFUSED[base],
                     proc.stderr), proc.stderr[-2000:]
    assert not osp.exists(out)


def test_width_weights_students_and_hooks(tmp_path, capsys):
    """A smaller fused width keeps the branch width at the teacher's, so
    the feature loss still applies; the stock custom hooks are kept."""
    base = 'regnet/regnetx-400mf_8xb128_in1k.py'
    out, proc = write(base, tmp_path, '--width', '128', '--weights',
                      'cifar', '--students', '2,3', capsys=capsys)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = Config.fromfile(out)
    assert cfg.model.neck.out_channels == 128
    assert cfg.model.head.branch_in_channels == 128
    assert cfg.model.head.branch_channels == 384
    assert cfg.model.head.students == (2, 3)
    assert (cfg.model.head.loss.ce_weight, cfg.model.head.loss.kd_weight) \
        == (0.2, 0.8)
    assert [h['type'] for h in cfg.custom_hooks] == [
        'PreciseBNHook', 'EpochSeedHook', 'NonFiniteLossHook',
        'SyncBuffersHook']
    assert cfg.default_hooks.checkpoint.type == 'SafeCheckpointHook'
    _, losses, _ = train_one_step(cfg)
    assert 'loss_fea_student3' in losses


def test_existing_output_is_kept(tmp_path):
    out = tmp_path / 'teskd.py'
    out.write_text('# mine\n')
    proc = run_tool('tools/teskd_config.py',
                    'mmpretrain::resnet/resnet18_8xb16_cifar10.py', str(out),
                    check=False)
    assert proc.returncode == 2
    assert 'exists; pass --overwrite to replace it' in proc.stderr
    assert out.read_text() == '# mine\n'


def test_hand_written_config_with_a_truncated_teacher_is_refused(tmp_path):
    """The README's recipe applied by hand to EfficientNet-B0: out_indices
    (0, 1, 2, 3) would train and deploy the network cut after layer 3."""
    from teskd_mm.utils import ConfigCheckError
    from teskd_mm.utils.preflight.model import build_model, \
        check_teacher_stage
    cfg = Config.fromfile(
        resolve_config('mmpretrain::efficientnet/efficientnet-b0_8xb32_in1k.py'))
    cfg.merge_from_dict({
        'model.backbone.out_indices': (0, 1, 2, 3),
        'model.neck': dict(type='MFMNeck', in_channels=(16, 24, 40, 80)),
        'model.head': dict(type='MultiBranchClsHead', num_classes=1000,
                           in_channels=80)})
    with pytest.raises(ConfigCheckError, match=r'out_indices=\(0, 1, 2, 3\) '
                       r'end at output 3, but the backbone itself ends at '
                       r'output 6 .*would be the backbone cut after output 3'
                       r'.*Make 6 the last of out_indices'):
        check_teacher_stage(cfg, build_model(cfg))


def test_a_zero_width_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        write('resnet/resnet18_8xb16_cifar10.py', tmp_path, '--width', '0',
              capsys=capsys)
    assert info.value.code == 2
    assert '--width must be at least 1, got 0' in capsys.readouterr().err
    assert not os.listdir(tmp_path)


def test_a_student_level_given_twice_is_refused(tmp_path, capsys):
    out, proc = write('resnet/resnet18_8xb16_cifar10.py', tmp_path,
                      '--students', '3,3', capsys=capsys)
    assert proc.returncode == 2
    assert re.search(r'students=\(3, 3\) names a level more than once; name '
                     r'each level once, e.g. students=\(3,\)', proc.stderr)
    assert not osp.exists(out)


def test_the_stock_evaluators_top_k_is_kept(tmp_path, capsys):
    """PoolFormer's head reports top-1 only; its evaluator top-1 and 5."""
    from teskd_mm.apis.teskd_config import plan_teskd
    plan = plan_teskd('mmpretrain::poolformer/poolformer-s12_32xb128_in1k.py')
    assert plan['eval_topk'] == (1, 5)
    assert plan['topk'] == (1, )


def test_dtskd_through_the_same_seam(tmp_path, capsys):
    """--method dtskd writes DTSKD's config of a stock config: it trains a
    step and deploys the stock network."""
    base = 'resnet/resnet18_8xb16_cifar10.py'
    out, proc = write(base, tmp_path, '--method', 'dtskd', capsys=capsys)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = Config.fromfile(out)
    assert (cfg.model.neck.type, cfg.model.head.type,
            cfg.model.head.loss.type) == ('DTSKDNeck', 'DTSKDHead',
                                          'DTSKDLoss')
    assert 'branch:' not in proc.stdout
    model, losses, changed = train_one_step(cfg)
    assert {'loss_hist_teacher', 'loss_hist_student3',
            'loss_kd_student1'} <= set(losses)
    assert all(changed)
    stock = MODELS.build(Config.fromfile(
        resolve_config(f'mmpretrain::{base}')).model)
    teacher = MODELS.build(stock_model_cfg(cfg.model))
    assert n_params(teacher) == n_params(stock)


@pytest.mark.parametrize('options, match', [
    (['--width', '256'], r"DTSKD fuses at the last stage's width \(512\)"),
    (['--weights', 'cifar'], r"--weights sets TESKD's loss weights"),
])
def test_dtskd_refuses_teskd_options(tmp_path, capsys, options, match):
    out, proc = write('resnet/resnet18_8xb16_cifar10.py', tmp_path,
                      '--method', 'dtskd', *options, capsys=capsys)
    assert proc.returncode == 2
    assert re.search(match, proc.stderr), proc.stderr
    assert not osp.exists(out)


def test_the_sweep_tool_tables_each_family(tmp_path):
    out = str(tmp_path / 'sweep.md')
    proc = run_tool('tools/analysis/teskd_config_sweep.py', '--families',
                    'resnet', 'deit', '--out', out)
    rows = open(out).read().splitlines()
    assert rows[0].startswith('| family | config | parameters |')
    resnet = next(r for r in rows if r.startswith('| resnet |'))
    deit = next(r for r in rows if r.startswith('| deit |'))
    assert '| ok: out_indices=(0, 1, 2, 3)' in resnet
    assert 'refused: The stock model (VisionTransformer with ' \
        'VisionTransformerClsHead) has no neck' in deit
    assert '**error**' not in proc.stdout


@pytest.mark.parametrize('base, match', [
    ('replknet/replknet-31B_32xb64_in1k-384px.py',
     r'cannot be read by mmengine 0\.10\.7: RuntimeError: The configuration '
     r'file type in the inheritance chain must match'),
    ('mlp_mixer/mlp-mixer-base-p16_64xb64_in1k.py',
     r'MlpMixer does not give its outputs 0 to \d+ at once'),
    ('repmlp/repmlp-base_8xb64_in1k.py',
     r'the backbone gives no output of 56x56 before output 0'),
])
def test_what_the_sweep_found_is_refused_not_a_traceback(base, match):
    from teskd_mm.apis.teskd_config import TeskdConfigError, plan_teskd
    with pytest.raises(TeskdConfigError, match=match):
        plan_teskd(f'mmpretrain::{base}')
