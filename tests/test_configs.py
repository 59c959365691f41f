"""Every config builds and trains a step; the paper's configs say what they
claim; the teachers have their baselines' size; the metafile is true."""
import copy
import functools
import glob
import itertools
import os.path as osp

import mmengine.config.utils as config_utils
import pytest
import torch
from mmengine.analysis import get_model_complexity_info
from mmengine.config import Config
from mmengine.fileio import load
from mmengine.logging import MessageHub
from mmengine.optim import build_optim_wrapper

from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

from teskd_mm.apis.deploy import MULTI_BRANCH_HEADS, deploy, stock_model_cfg

from conftest import ROOT

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
    'no-distillation': dict(head=dict(loss=dict(kd_weight=0., fea_weight=0.))),
    'student3-only': dict(
        neck=dict(students=(3, )), head=dict(students=(3, ))),
    'students2-3': dict(
        neck=dict(students=(2, 3)), head=dict(students=(2, 3))),
    'no-feature-loss': dict(head=dict(loss=dict(fea_weight=0.))),
}


@pytest.fixture(scope='module', autouse=True)
def read_mmpretrain_index_once():
    """mmengine re-reads mmpretrain's 340 metafiles for every
    ``mmpretrain::`` base (0.7 s each); the files do not change, so the test
    reads each once."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(config_utils, 'load', functools.lru_cache(None)(load))
        yield


@functools.lru_cache(None)
def load_cfg(path: str) -> Config:
    """A config by its path from the project root (shared: do not change)."""
    return Config.fromfile(osp.join(ROOT, path))


def model_cfg(cfg: Config) -> dict:
    """The model config as the Runner builds it."""
    model = copy.deepcopy(cfg.model)
    if 'data_preprocessor' in cfg:
        model.setdefault('data_preprocessor', cfg.data_preprocessor)
    return model


INIT_FUNCTIONS = ('uniform_', 'normal_', 'trunc_normal_', 'constant_',
                  'ones_', 'zeros_', 'kaiming_uniform_', 'kaiming_normal_',
                  'xavier_uniform_', 'xavier_normal_')


def num_params(cfg: dict) -> int:
    """Count without drawing initial values, which the count ignores."""
    with pytest.MonkeyPatch.context() as mp:
        for name in INIT_FUNCTIONS:
            mp.setattr(torch.nn.init, name, lambda t, *args, **kwargs: t)
        return sum(p.numel() for p in MODELS.build(cfg).parameters())


@functools.lru_cache(None)
def deployed_params(path: str) -> int:
    """Parameters of the deployed model: the teacher, or a plain model."""
    model = load_cfg(path).model
    if model.head.type in MULTI_BRANCH_HEADS:
        model = stock_model_cfg(model)
    return num_params(model)


def input_size(cfg: Config) -> int:
    """A small input size the config's model takes: 32 for CIFAR-size
    pipelines; for larger crops 64, which still halves through the four
    stride-2 stages of an ImageNet ResNet (16, 8, 4, 2 px)."""
    sizes = []
    for t in cfg.train_dataloader.dataset.get('pipeline', []):
        for key in ('crop_size', 'scale'):
            v = t.get(key)
            if isinstance(v, int):
                sizes.append(v)
            elif isinstance(v, (tuple, list)):
                sizes.extend(v)
    return 64 if max(sizes, default=224) >= 64 else max(sizes)


def random_batch(size: int, num_classes: int) -> dict:
    return dict(
        inputs=[
            torch.randint(0, 256, (3, size, size), dtype=torch.uint8)
            for _ in range(2)
        ],
        data_samples=[
            DataSample(metainfo=dict(sample_idx=i)).set_gt_label(
                i % num_classes) for i in range(2)
        ])


def expected_loss_keys(head: dict) -> set:
    loss = head.get('loss', {})
    keys = {'loss_ce_teacher'}
    for b in head.get('students', (1, 2, 3)):
        keys.add(f'loss_ce_student{b}')
        if loss.get('kd_weight', 0.8):
            keys.add(f'loss_kd_student{b}')
        if loss.get('fea_weight', 1e-7):
            keys.add(f'loss_fea_student{b}')
    return keys


_hubs = itertools.count()


def train_one_step(cfg: Config, steps: int = 1) -> tuple:
    """Build the model and take ``steps`` SGD steps on random images, as the
    Runner would (epoch 0 in the message hub)."""
    # A fresh hub of its own, which becomes the current one.
    hub = MessageHub.get_instance(f'test_configs_{next(_hubs)}')
    hub.update_info('epoch', 0)
    hub.update_info('iter', 0)
    hub.update_info('max_epochs', cfg.train_cfg.get('max_epochs', 1))
    torch.manual_seed(0)
    model = MODELS.build(model_cfg(cfg))
    model.init_weights()
    model.train()
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    watched = [next(model.backbone.parameters()), model.head.fc.weight]
    before = [p.detach().clone() for p in watched]
    batch = random_batch(input_size(cfg), model.head.num_classes)
    for _ in range(steps):
        losses = model.train_step(batch, optim_wrapper)
    changed = [not torch.equal(a, p) for a, p in zip(before, watched)]
    return model, losses, changed


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
    assert baseline.model.head.type not in MULTI_BRANCH_HEADS
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


METAFILE = osp.join(ROOT, 'configs', 'teskd', 'metafile.yml')


def test_model_index_lists_every_teskd_and_baseline_config():
    index = load(osp.join(ROOT, 'model-index.yml'))
    assert 'configs/teskd/metafile.yml' in index['Import']
    listed = [m['Config'] for m in load(METAFILE)['Models']]
    assert len(listed) == len(set(listed))
    wanted = [
        p for p in CONFIGS
        if p.startswith(('configs/teskd/', 'configs/baseline/'))
    ]
    missing = sorted(set(wanted) - set(listed))
    assert not missing, f'configs/teskd/metafile.yml lacks {missing}'
    assert all(osp.isfile(osp.join(ROOT, p)) for p in listed)


@pytest.mark.parametrize(
    'entry', load(METAFILE)['Models'] if osp.isfile(METAFILE) else [],
    ids=lambda m: m['Name'])
def test_metafile_gives_the_deployed_size(entry):
    assert entry['Metadata']['Parameters'] == deployed_params(entry['Config'])
    assert entry['In Collection'] in ('TESKD', 'Baseline')


def test_metafile_flops_are_those_of_the_deployed_teacher():
    entries = {m['Name']: m for m in load(METAFILE)['Models']}
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
