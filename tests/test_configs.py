"""Every config builds and trains a step; the paper's configs say what they
claim; the teachers have their baselines' size; the metafile is true."""
import functools
import glob
import os.path as osp

import pytest
import torch
from mmengine.analysis import get_model_complexity_info
from mmengine.config import Config
from mmengine.fileio import load

from mmpretrain.registry import MODELS

from teskd_mm.apis.deploy import deploy, self_kd_head, stock_model_cfg

from conftest import ROOT, expected_loss_keys, n_params, train_one_step

# Every config a user runs; configs/_base_/ holds their parts.
CONFIGS = sorted(
    osp.relpath(p, ROOT)
    for p in glob.glob(osp.join(ROOT, 'configs', '**', '*.py'),
                       recursive=True) if '_base_' not in p)
TABLE1 = ('vgg16', 'vgg19', 'resnet18', 'resnet34', 'seresnet34',
          'resnext18', 'resnext34')
# What each ablation changes in the model config of the TESKD config it
# inherits (Tables 1, 4 and 5 of the paper), and nothing else.
ABLATIONS = {
    'no-connection': dict(neck=dict(fusion='none')),
    'fpn-style-add': dict(neck=dict(fusion='add')),
    'unet-style-concat': dict(neck=dict(fusion='concat')),
    'no-distillation': dict(
        head=dict(loss=dict(ce_weight=1., kd_weight=0., fea_weight=0.))),
    'student3-only': dict(
        neck=dict(students=(3, )), head=dict(students=(3, ))),
    'students2-3': dict(
        neck=dict(students=(2, 3)), head=dict(students=(2, 3))),
    'no-feature-loss': dict(head=dict(loss=dict(fea_weight=0.))),
}


@functools.lru_cache(None)
def load_cfg(path: str) -> Config:
    """A config by its path from the project root (shared: do not change)."""
    return Config.fromfile(osp.join(ROOT, path))


@functools.lru_cache(None)
def deployed_params(path: str) -> int:
    """Parameters of the deployed model: the teacher, or a plain model."""
    model = load_cfg(path).model
    if self_kd_head(model):
        model = stock_model_cfg(model)
    return n_params(model)


@pytest.mark.parametrize('path', CONFIGS)
def test_config_builds_and_trains_a_step(path):
    cfg = load_cfg(path)
    model, losses, changed = train_one_step(cfg)
    assert losses and all('loss' in k for k in losses), sorted(losses)
    assert all(torch.isfinite(v).all() for v in losses.values()), losses
    assert all(changed), 'the step left the backbone or the classifier as is'
    if cfg.model.head.type == 'MultiBranchClsHead':
        assert set(losses) == expected_loss_keys(cfg.model.head) | {'loss'}


def teskd_configs(pattern='*.py'):
    return sorted(
        osp.relpath(p, ROOT)
        for p in glob.glob(osp.join(ROOT, 'configs', 'teskd', pattern)))


PAIRS = [(p, p.replace('teskd', 'baseline', 1)) for p in teskd_configs()
         if osp.isfile(osp.join(ROOT, p.replace('teskd', 'baseline', 1)))]


def test_every_table_config_has_its_pair():
    expected = [f'{a}_cifar100' for a in TABLE1] + ['resnet18_in1k']
    for name in expected:
        assert (f'configs/teskd/{name}.py',
                f'configs/baseline/{name}.py') in PAIRS, name
        for fea in ('no-feature-loss', ) if 'cifar' in name else ():
            assert osp.isfile(
                osp.join(ROOT, 'configs', 'teskd', 'ablations',
                         f'{name}_{fea}.py')), name


@pytest.mark.parametrize('teskd_cfg,baseline_cfg', PAIRS)
def test_teacher_has_exactly_the_baseline_size(teskd_cfg, baseline_cfg):
    teskd, baseline = load_cfg(teskd_cfg), load_cfg(baseline_cfg)
    assert self_kd_head(baseline.model) is None
    assert deployed_params(teskd_cfg) == deployed_params(baseline_cfg)
    # The same training recipe, too.
    for key in ('optim_wrapper', 'param_scheduler', 'train_cfg'):
        assert teskd[key] == baseline[key], key
    assert teskd.train_dataloader.batch_size == \
        baseline.train_dataloader.batch_size


def test_recipes_match_the_paper():
    cifar = load_cfg('configs/teskd/vgg16_cifar100.py')
    assert cifar.train_cfg.max_epochs == 200
    assert cifar.param_scheduler.milestones == [100, 150]
    assert cifar.optim_wrapper.optimizer.weight_decay == 5e-4
    assert cifar.train_dataloader.batch_size == 128
    assert cifar.model.head.get('branch_kernels') is None
    assert cifar.model.head.branch_end_scale == 2
    loss = cifar.model.head.loss
    assert (loss.ce_weight, loss.kd_weight, loss.fea_weight) == (0.2, 0.8,
                                                                 1e-7)
    imagenet = load_cfg('configs/teskd/resnet18_in1k.py')
    assert imagenet.train_cfg.max_epochs == 90
    assert imagenet.param_scheduler.milestones == [30, 60]
    opt = imagenet.optim_wrapper.optimizer
    assert (opt.lr, opt.momentum, opt.weight_decay) == (0.1, 0.9, 1e-4)
    # 8 processes x 32 = 256, the batch that auto_scale_lr refers to.
    assert imagenet.train_dataloader.batch_size * 8 == \
        imagenet.auto_scale_lr.base_batch_size == 256
    loss = imagenet.model.head.loss
    assert (loss.ce_weight, loss.kd_weight) == (0.8, 0.2)


def test_students_end_where_the_paper_says():
    """VGG: 2x2 (released); CIFAR ResNets: 4x4; ImageNet ResNet-18: 7x7."""
    for path, size, end in (('configs/teskd/vgg16_cifar100.py', 32, 2),
                            ('configs/teskd/resnet18_cifar100.py', 32, 4),
                            ('configs/teskd/resnet18_in1k.py', 224, 7)):
        model = MODELS.build(load_cfg(path).model)
        model.eval()
        with torch.no_grad():
            fused = model.neck(model.backbone(torch.rand(1, 3, size, size)))
        for b, s in zip(model.head.students, fused.students):
            branch = model.head.branches[str(b)]
            assert branch.mix(branch.reduce(s)).shape[-1] == end, path


def flat(d: dict, prefix: str = '') -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flat(v, f'{prefix}{k}.'))
        else:
            out[f'{prefix}{k}'] = v
    return out


@pytest.mark.parametrize(
    'path', teskd_configs(osp.join('ablations', '*.py')))
def test_ablation_changes_only_what_it_names(path):
    name = osp.splitext(osp.basename(path))[0]
    arch, _, what = name.partition('_cifar100_')
    assert what in ABLATIONS, f'{name}: unknown ablation'
    base = load_cfg(f'configs/teskd/{arch}_cifar100.py')
    cfg = load_cfg(path)
    expected = flat(base.model.to_dict())
    expected.update(flat(ABLATIONS[what]))
    assert flat(cfg.model.to_dict()) == expected
    rest = {k: v for k, v in cfg.to_dict().items() if k != 'model'}
    assert rest == {k: v for k, v in base.to_dict().items() if k != 'model'}


def test_vgg_teskd_deploys_to_its_teacher(tmp_path):
    """The deployed config keeps VGG_CIFAR (and imports this package) and
    the teacher's logits are the trained model's, unchanged."""
    path = osp.join(ROOT, 'configs/teskd/vgg16_cifar100.py')
    model = MODELS.build(load_cfg('configs/teskd/vgg16_cifar100.py').model)
    ckpt = str(tmp_path / 'vgg16.pth')
    torch.save(dict(state_dict=model.state_dict()), ckpt)
    cfg_out, ckpt_out = deploy(path, ckpt, str(tmp_path / 'out'))
    deployed = Config.fromfile(cfg_out)
    assert deployed.model.backbone.type == 'VGG_CIFAR'
    assert deployed.model.backbone.out_indices == (3, )
    assert deployed.custom_imports.imports == ['teskd_mm']
    stock = MODELS.build(deployed.model)
    stock.load_state_dict(torch.load(ckpt_out)['state_dict'], strict=True)
    model.eval()
    stock.eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(
            stock(x, mode='tensor'), model(x, mode='tensor'))


METAFILES = [osp.join(ROOT, 'configs', m, 'metafile.yml')
             for m in ('teskd', 'dtskd')]


def test_model_index_lists_every_teskd_and_baseline_config():
    index = load(osp.join(ROOT, 'model-index.yml'))
    assert index['Import'] == [osp.relpath(m, ROOT) for m in METAFILES]
    listed = [m['Config'] for f in METAFILES for m in load(f)['Models']]
    assert len(listed) == len(set(listed))
    wanted = [
        p for p in CONFIGS
        if p.startswith(('configs/teskd/', 'configs/baseline/',
                         'configs/dtskd/'))
    ]
    missing = sorted(set(wanted) - set(listed))
    assert not missing, f'the metafiles lack {missing}'
    assert all(osp.isfile(osp.join(ROOT, p)) for p in listed)


@pytest.mark.parametrize(
    'entry', [m for f in METAFILES for m in load(f)['Models']],
    ids=lambda m: m['Name'])
def test_metafile_gives_the_deployed_size(entry):
    assert entry['Metadata']['Parameters'] == deployed_params(entry['Config'])
    assert entry['In Collection'] in ('TESKD', 'Baseline', 'DTSKD')


def test_metafile_flops_are_those_of_the_deployed_teacher():
    entries = {m['Name']: m for m in load(METAFILES[0])['Models']}
    entry = entries['teskd_vgg16_cifar100']
    model = MODELS.build(stock_model_cfg(load_cfg(entry['Config']).model))
    model.eval()
    info = get_model_complexity_info(
        model, input_shape=(3, 32, 32), show_table=False, show_arch=False)
    assert entry['Metadata']['FLOPs'] == info['flops']
    # Each teacher costs what its baseline costs.
    for name, m in entries.items():
        twin = entries.get(name.replace('teskd_', 'baseline_', 1))
        if name.startswith('teskd_') and twin:
            assert m['Metadata'] == twin['Metadata'], name
