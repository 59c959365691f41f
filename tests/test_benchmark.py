"""tools/benchmark.py: a real run of both recipes, and its clear errors."""
import importlib.util
import json
import os
import os.path as osp

import pytest

from conftest import CIFAR10_TAR, ROOT, run_tool

TESKD = 'configs/teskd/resnet18_cifar100.py'
BASELINE = 'configs/baseline/resnet18_cifar100.py'


def load_tool():
    spec = importlib.util.spec_from_file_location(
        'benchmark_tool', osp.join(ROOT, 'tools', 'benchmark.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_runs_both_models(cifar10_mini, tmp_path):
    out = tmp_path / 'result.json'
    proc = run_tool(
        'tools/benchmark.py', TESKD, '--baseline', BASELINE,
        '--batch-size', '2', '--iters', '2', '--warmup', '1', '--threads',
        '1', '--deployed-teacher', '--data-loading', '--data-root',
        cifar10_mini, '--data-batches', '2', '--out', str(out),
        env=dict(OMP_NUM_THREADS='1'))
    res = json.loads(out.read_text())
    model, base = res['models']['model'], res['models']['baseline']
    # The paper's network sizes: the whole TESKD net and the plain one.
    assert model['num_params'] == 37_050_832
    assert base['num_params'] == 11_220_132
    for r in (model, base):
        assert len(r['step_times_s']) == 2
        assert r['median_step_s'] > 0
        assert r['images_per_s'] == pytest.approx(2 / r['median_step_s'])
    # 26 M more parameters means more gradient memory in every step.
    assert model['peak_memory_bytes'] > base['peak_memory_bytes'] > 0
    assert res['ratio'] == pytest.approx(
        model['median_step_s'] / base['median_step_s'])
    assert res['settings']['input_size'] == 32
    dep = res['deployed_teacher']
    assert dep['same_module_types'] and dep['same_parameter_shapes']
    assert dep['inference_ratio'] > 0
    data = res['data_loading']
    assert data['num_workers'] == 2  # the config's
    assert data['transforms'] == ['RandomCrop', 'RandomFlip', 'PackInputs']
    assert data['in_memory_images_per_s'] > 0
    assert data['jpeg_images_per_s'] > 0
    assert 'step time ratio (model / baseline)' in proc.stdout
    assert 'data loading with 2 workers' in proc.stdout


def test_ablation_variants_compute_the_same_losses():
    """Every --ablation variant is the same network, only run differently."""
    import copy

    import torch
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from mmpretrain.registry import MODELS
    tool = load_tool()
    init_default_scope('mmpretrain')
    cfg = Config.fromfile(osp.join(ROOT, TESKD))
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    batch = tool.make_batch(4, 32, 100, seed=0)
    data = model.data_preprocessor(batch, True)

    def losses(m):
        with torch.no_grad():
            return m(data['inputs'], data['data_samples'], mode='loss')

    ref = losses(copy.deepcopy(model))
    for name, variant in tool.ABLATION:
        m = copy.deepcopy(model)
        tool.apply_variant(m, variant)
        out = losses(m)
        assert out.keys() == ref.keys()
        for k in ref:
            torch.testing.assert_close(out[k], ref[k], rtol=1e-4, atol=1e-5,
                                       msg=f'{name}: {k}')


def test_ablation_needs_a_teskd_model():
    from mmengine.config import Config

    from mmpretrain.registry import MODELS
    tool = load_tool()
    cfg = Config.fromfile(osp.join(ROOT, BASELINE))
    model = MODELS.build(cfg.model)
    with pytest.raises(SystemExit, match=r"the config has no \['branch', "
                       r"'neck', 'upsample'\]"):
        tool.apply_variant(model, tool.ABLATION[0][1])


def test_extracts_cifar_jpeg_subset(tmp_path):
    if not osp.isfile(CIFAR10_TAR):
        pytest.skip(f'{CIFAR10_TAR} is not available')
    folder = load_tool().cifar_jpeg_folder(CIFAR10_TAR, 20, str(tmp_path))
    classes = sorted(os.listdir(osp.join(folder, 'train')))
    assert len(classes) == 10
    assert all(
        len(os.listdir(osp.join(folder, 'train', c))) == 2 for c in classes)


@pytest.mark.parametrize('argv,message', [
    (['--batch-size', '0'], '--batch-size must be at least 1, got 0'),
    (['--iters', '0'], '--iters must be at least 1, got 0'),
    (['--warmup', '-1'], '--warmup must be 0 or more, got -1'),
    (['--threads', '0'], '--threads must be at least 1, got 0'),
    (['--deployed-teacher'], 'give --baseline CONFIG too'),
    (['--ablation'], '--ablation compares with the baseline'),
    (['--data-loading', '--data-root', '/nonexistent/cifar'],
     '--data-root /nonexistent/cifar does not exist'),
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
