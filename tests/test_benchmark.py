"""tools/benchmark.py: a real run of both recipes, and its clear errors."""
import importlib.util
import json
import os.path as osp

import pytest

from conftest import ROOT, run_tool

TESKD = 'configs/teskd/resnet18_cifar100.py'
BASELINE = 'configs/baseline/resnet18_cifar100.py'


def load_tool():
    spec = importlib.util.spec_from_file_location(
        'benchmark_tool', osp.join(ROOT, 'tools', 'benchmark.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_runs_both_recipes_and_the_ablation(tmp_path):
    out = tmp_path / 'result.json'
    proc = run_tool(
        'tools/benchmark.py', TESKD, '--baseline', BASELINE,
        '--batch-size', '2', '--iters', '1', '--warmup', '0', '--threads',
        '1', '--ablation', '--deployed-teacher', '--out', str(out),
        env=dict(OMP_NUM_THREADS='1'))
    res = json.loads(out.read_text())
    models = res['models']
    assert list(models) == ['model', 'plain', 'baseline']
    # The paper's network sizes: the whole TESKD net and the plain one.
    assert models['model']['num_params'] == 37_050_832
    assert models['plain']['num_params'] == 37_050_832
    assert models['baseline']['num_params'] == 11_220_132
    for r in models.values():
        assert len(r['step_times_s']) == 1
        assert r['median_step_s'] > 0
        assert r['images_per_s'] == pytest.approx(2 / r['median_step_s'])
    # 26 M more parameters means more gradient memory in every step.
    assert models['model']['peak_memory_bytes'] > \
        models['baseline']['peak_memory_bytes'] > 0
    for name in ('model', 'plain'):
        assert models[name]['ratio'] == pytest.approx(
            models[name]['median_step_s'] /
            models['baseline']['median_step_s'])
        assert f'step time ratio ({name} / baseline)' in proc.stdout
    assert 'ratio' not in models['baseline']
    settings = res['settings']
    assert settings['input_size'] == [32, 32]
    assert settings['heap_reuse'] is None  # not declared by the configs
    assert settings['variants'] == {
        'plain': {'model.neck.fast': False, 'model.head.fast': False}}
    dep = res['deployed_teacher']
    assert dep['same_module_types'] and dep['same_parameter_shapes']
    assert dep['inference_ratio'] > 0
    assert 'deployed teacher: same module types as the baseline: True' in \
        proc.stdout


def test_variants_compute_the_same_losses():
    """A variant is the same network: CONFIG's weights give its losses."""
    import logging

    import torch
    from mmengine.logging import MMLogger
    from mmengine.registry import init_default_scope
    tool = load_tool()
    init_default_scope('mmpretrain')
    MMLogger.get_current_instance().setLevel(logging.WARNING)
    from teskd_mm.utils.inputs import dummy_batch
    cfg = tool.load_config(osp.join(ROOT, TESKD))
    torch.manual_seed(0)
    ref = tool.build(cfg, 'model').double().train()
    torch.manual_seed(1)
    batch = dummy_batch(cfg, 'train', 2)

    def losses(model):
        data = model.data_preprocessor(batch, True)
        with torch.no_grad():
            return model(data['inputs'].double(), data['data_samples'],
                         mode='loss')

    expected = losses(ref)
    # --ablation's variant: the plain transcription of neck and head.
    name, options = tool.parse_variant(tool.PLAIN)
    variant = tool.build(tool.variant_config(cfg, name, options), name)
    assert ref.neck.fast and ref.head.fast
    assert not variant.neck.fast and not variant.head.fast
    variant.load_state_dict(ref.state_dict())
    got = losses(variant.double().train())
    assert got.keys() == expected.keys()
    for k in expected:
        torch.testing.assert_close(got[k], expected[k], rtol=0, atol=1e-10,
                                   msg=k)


def test_variant_options_are_read_as_cfg_options():
    tool = load_tool()
    assert tool.parse_variant('x=model.neck.students=2,3,model.head.fast='
                              'False') == ('x', {
                                  'model.neck.students': [2, 3],
                                  'model.head.fast': False})
    assert tool.parse_variant('y=optim_wrapper.optimizer.lr=0.2') == (
        'y', {'optim_wrapper.optimizer.lr': 0.2})


@pytest.mark.parametrize('argv,message', [
    (['--batch-size', '0'], '--batch-size must be at least 1, got 0'),
    (['--iters', '0'], '--iters must be at least 1, got 0'),
    (['--warmup', '-1'], '--warmup must be at least 0, got -1'),
    (['--threads', '0'], '--threads must be at least 1, got 0'),
    (['--deployed-teacher'], 'give --baseline CONFIG too'),
    (['--ablation'], '--ablation compares with the baseline'),
    (['--variant', 'x=model.neck.fast=False'],
     '--variant compares with the baseline'),
    (['--variant', 'plain'], "'plain' is not NAME=KEY=VALUE"),
    (['--variant', 'x=fast'], "'x=fast' is not NAME=KEY=VALUE"),
    (['--baseline', BASELINE, '--ablation', '--variant', 'plain=a.b=1'],
     "--variant names ['plain', 'plain'] must differ"),
    (['--baseline', BASELINE, '--variant', 'model=a.b=1'],
     "--variant names ['model'] must differ"),
])
def test_bad_arguments_are_explained(argv, message, capsys):
    with pytest.raises(SystemExit):
        load_tool().parse_args([TESKD] + argv)
    assert message in capsys.readouterr().err


def test_existing_results_are_not_overwritten(tmp_path, capsys):
    out = tmp_path / 'result.json'
    out.write_text('{}')
    with pytest.raises(SystemExit):
        load_tool().parse_args([TESKD, '--out', str(out)])
    assert f'--out {out} already exists' in capsys.readouterr().err
    assert out.read_text() == '{}'


@pytest.mark.parametrize('config,argv,message', [
    # The plain ResNet has no TESKD neck and head to switch.
    (BASELINE, ['--ablation'], "--ablation: model.neck.fast: model.neck is "
     "GlobalAveragePooling, which takes no argument 'fast'"),
    (TESKD, ['--variant', 'x=model.nek.fast=False'],
     '--variant x: model.nek.fast: the config has no dict or list '
     'model.nek'),
    (TESKD, ['--variant', 'x=model.neck.fsat=False'],
     "--variant x: model.neck.fsat: model.neck is MFMNeck, which takes no "
     "argument 'fsat'"),
    (BASELINE, ['--deployed-teacher'],
     '--deployed-teacher: The config\'s head is \'LinearClsHead\''),
])
def test_configs_checked_before_building(config, argv, message):
    with pytest.raises(SystemExit, match=message):
        load_tool().main([osp.join(ROOT, config), '--baseline',
                          osp.join(ROOT, BASELINE)] + argv)


@pytest.mark.parametrize('argv,message', [
    (['--amp', 'bf16'], 'runs on GPUs only; drop --amp or use --device cuda'),
    (['--device', 'cuda'], 'torch sees no CUDA GPU here; use --device cpu'),
    (['--device', 'gpu0'], "--device 'gpu0' is not a torch device"),
])
def test_device_and_amp_checked_before_building(argv, message):
    import torch
    if torch.cuda.is_available():
        pytest.skip('these messages are for machines without a GPU')
    with pytest.raises(SystemExit, match=message):
        load_tool().main([osp.join(ROOT, TESKD)] + argv)


def test_missing_config_is_explained():
    with pytest.raises(SystemExit, match='config no/such.py does not exist'):
        load_tool().main(['no/such.py'])


@pytest.mark.parametrize('tool', ['benchmark.py', 'analysis/data_loading.py'])
def test_tools_assume_no_machine_data(tool):
    with open(osp.join(ROOT, 'tools', tool)) as f:
        source = f.read()
    for text in ('../shared', "'shared'", 'CIFAR10_TAR', 'DEFAULT_DATA'):
        assert text not in source
