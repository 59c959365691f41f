"""Write the TESKD config of any mmpretrain classifier config.

:func:`plan_teskd` builds the stock model of a config, runs its backbone
once at the config's own input size with every output it can give, and
picks four outputs that halve in size, the last being the one the stock
head reads. :func:`render_teskd` writes a config that inherits the stock
one and states only what TESKD changes, a comment per inferred value.
Before anything is written, the plan is verified: the TESKD model takes a
training step, and the teacher it would deploy is the stock network (same
parameters, same logits for the same weights). Where that cannot hold, a
:class:`TeskdConfigError` says why.
"""
import copy
import inspect
import os
import os.path as osp
import tempfile
import textwrap
from typing import Dict, List, Optional, Sequence, Tuple

import mmengine
import torch
from mmengine.config import Config
from mmengine.logging import MessageHub

import mmpretrain
from mmpretrain.registry import MODELS

from ..utils.inputs import dummy_batch, input_size
from ..utils.preflight.model import build_model
from ..utils.runtime import RELIABILITY_HOOKS
from .deploy import stock_model_cfg

METHODS = ('teskd', 'dtskd')
# What the stock heads of models without a neck read, for refusals.
HEAD_INPUTS = {
    'VisionTransformerClsHead': 'the class token of the last block',
    'DeiTClsHead': 'the class and distillation tokens of the last block',
    'ConformerHead': 'the pooled CNN branch and the class token',
    'EfficientFormerClsHead': 'the pooled tokens, with a distillation head',
    'LeViTClsHead': 'the pooled tokens, with a distillation head',
}
# Loss weights (alpha1, alpha2) of the paper's two recipes.
WEIGHTS = {'cifar': (0.2, 0.8), 'imagenet': (0.8, 0.2)}


class TeskdConfigError(ValueError):
    """A config TESKD cannot be added to as asked; nothing was written."""


def resolve_config(path: str) -> str:
    """The file of a config given as a path or as ``mmpretrain::<path>``."""
    if path.startswith('mmpretrain::'):
        path = osp.join(
            osp.dirname(mmpretrain.__file__), '.mim', 'configs',
            path[len('mmpretrain::'):])
    if not osp.isfile(path):
        raise TeskdConfigError(f'Config {path} does not exist.')
    return osp.abspath(path)


def _build(cfg_dict: dict):
    return MODELS.build(copy.deepcopy(cfg_dict))


def _last_index(backbone_cfg: dict) -> int:
    """The largest index the backbone accepts in ``out_indices``.

    The backbone's own count of stages or layers is tried first (one
    build); otherwise indices are tried from 15 down (invalid ones are
    mostly refused before the layers are built).
    """
    backbone = _build(backbone_cfg)
    for attr in ('num_stages', 'layers', 'stages'):
        count = getattr(backbone, attr, None)
        count = len(count) if isinstance(count, (list, tuple,
                                                 torch.nn.Module)) \
            else count
        if isinstance(count, int) and count > 0:
            try:
                _build(dict(backbone_cfg, out_indices=(count - 1, )))
                return count - 1
            except Exception:
                break
    for index in range(15, -1, -1):
        try:
            _build(dict(backbone_cfg, out_indices=(index, )))
            return index
        except Exception:
            continue
    raise TeskdConfigError(
        f'{backbone_cfg["type"]} takes no out_indices: TESKD needs a backbone '
        'that can give the maps of several stages.')


def backbone_outputs(backbone_cfg: dict, size: Tuple[int, int],
                     channels: int = 3) -> List[Tuple[int, int, Tuple]]:
    """Every output the backbone can give: (index, channels, (h, w)).

    Raises:
        TeskdConfigError: An output is not an (N, C, H, W) map.
    """
    last = _last_index(backbone_cfg)
    try:
        backbone = _build(
            dict(backbone_cfg, out_indices=tuple(range(last + 1))))
        backbone.eval()
        with torch.no_grad():
            outs = backbone(torch.zeros(1, channels, *size))
    except Exception as e:
        raise TeskdConfigError(
            f'{backbone_cfg["type"]} does not give its outputs 0 to {last} '
            f'at once ({type(e).__name__}: {e}): TESKD needs the maps of '
            'several stages from one forward pass.') from None
    found = []
    for index, out in enumerate(outs):
        if out.dim() != 4:
            hint = ''
            if backbone_cfg.get('gap_before_final_norm', True) and \
                    'gap_before_final_norm' in inspect.signature(
                        type(backbone)).parameters:
                hint = (' With gap_before_final_norm=False it would give '
                        'maps, but the stock model normalises after '
                        'pooling: its teacher would be another network.')
            raise TeskdConfigError(
                f'{backbone_cfg["type"]} output {index} is of shape '
                f'{tuple(out.shape)}, not an (N, C, H, W) map: TESKD\'s '
                'fusion needs the maps of every stage (a backbone that pools '
                f'or keeps tokens does not give them).{hint}')
        found.append((index, int(out.shape[1]), tuple(out.shape[-2:])))
    return found


def check_stock_teacher(cfg: Config) -> None:
    """The stock model must be backbone -> global average pooling -> one
    Linear, the teacher TESKD deploys."""
    model = cfg.model
    neck, head = model.get('neck'), model.get('head') or {}
    if not neck:
        backbone = model.backbone.get('type')
        reads = HEAD_INPUTS.get(head.get('type'),
                                'the backbone\'s output as it is')
        backbone_cls = MODELS.get(backbone) if isinstance(backbone,
                                                          str) else None
        if backbone_cls is not None and 'gap_before_final_norm' in \
                inspect.signature(backbone_cls).parameters and \
                model.backbone.get('gap_before_final_norm', True):
            reads += (f' ({backbone} pools and then normalises, '
                      'gap_before_final_norm=True)')
        raise TeskdConfigError(
            f'The stock model ({backbone} with {head.get("type")}) has no '
            f'neck: its head reads {reads}, where TESKD\'s teacher is '
            'backbone -> GlobalAveragePooling -> Linear on a map; the '
            'deployed teacher would be another network, so no config is '
            'written.')
    if not isinstance(neck, dict) or neck.get('type') != \
            'GlobalAveragePooling':
        name = [n.get('type') for n in neck] if isinstance(neck, list) \
            else (neck or {}).get('type')
        raise TeskdConfigError(
            f'The stock model\'s neck is {name!r}, where TESKD\'s teacher is '
            'backbone -> GlobalAveragePooling -> Linear; its students would '
            'hang off another network than the one deployed, so no config '
            'is written.')
    if head.get('type') != 'LinearClsHead':
        raise TeskdConfigError(
            f'The stock head is {head.get("type")!r}, where TESKD\'s teacher '
            'classifies with one Linear (LinearClsHead); the deployed '
            'teacher would not be the stock network, so no config is '
            'written.')


def teacher_output(cfg: Config, outputs: Sequence) -> int:
    """The index of the backbone output the stock head reads."""
    default = cfg.model.backbone.get('out_indices')
    if default is None:
        default = getattr(_build(cfg.model.backbone), 'out_indices', None)
    if default is None:
        raise TeskdConfigError(
            f'{cfg.model.backbone.type} does not name the output its head '
            'reads (it has no out_indices): TESKD cannot tell which output '
            'is the teacher\'s.')
    if isinstance(default, int):
        default = (default, )
    index = list(default)[-1]
    return index if index >= 0 else len(outputs) + index


def pick_stages(outputs: Sequence, teacher: int, size: Tuple[int, int]
                ) -> Tuple[int, ...]:
    """Four outputs that halve in size, ending at ``teacher``.

    Each level is the deepest output of twice the size of the next one, so
    the students see the richest map of each size.
    """
    by_index = {i: (c, s) for i, c, s in outputs}
    chosen = [teacher]
    want = by_index[teacher][1]
    for _ in range(3):
        want = (2 * want[0], 2 * want[1])
        fits = [i for i, _, s in outputs if s == want and i < chosen[0]]
        if not fits:
            sizes = ', '.join(f'{i}: {s[0]}x{s[1]}' for i, _, s in outputs
                              if i <= teacher)
            larger = [s for i, _, s in outputs
                      if i < chosen[0] and s[0] > want[0] // 2]
            hint = (' An input size that halves evenly through the backbone '
                    '(a multiple of its total stride) may give them.'
                    if larger and not all(s == want for s in larger) else
                    f' Its outputs before {chosen[0]} are not larger, '
                    'whatever the input size, so TESKD\'s four levels do '
                    'not fit this backbone.')
            raise TeskdConfigError(
                f'At the input size {size[0]}x{size[1]} the backbone gives '
                f'no output of {want[0]}x{want[1]} before output '
                f'{chosen[0]} (outputs and sizes: {sizes}): TESKD needs four '
                'outputs that halve in size, the last the one the stock head '
                f'reads.{hint}')
        chosen.insert(0, fits[-1])
    return tuple(chosen)


def evaluator_topk(cfg: Config, head: dict) -> Tuple[int, ...]:
    """The top-k the stock config evaluates (its ``Accuracy``), which
    may differ from its head's; the head's where it evaluates no accuracy."""
    evaluators = cfg.get('val_evaluator') or []
    for evaluator in (evaluators if isinstance(evaluators, (list, tuple))
                      else [evaluators]):
        if isinstance(evaluator, dict) and \
                evaluator.get('type') == 'Accuracy':
            topk = evaluator.get('topk', (1, ))
            return tuple(topk) if isinstance(topk, (list, tuple)) \
                else (int(topk), )
    return tuple(head.get('topk', (1, )))


def plan_teskd(base: str,
               width: Optional[int] = None,
               weights: Optional[str] = None,
               students: Sequence[int] = (1, 2, 3),
               method: str = 'teskd') -> Dict:
    """What TESKD (or DTSKD) sets on top of a stock config, and why.

    Args:
        base (str): The stock config, a path or ``mmpretrain::<path>``.
        width (int, optional): The fused width (neck ``out_channels``).
            Defaults to the last stage's channels, as in the paper; DTSKD
            takes no other.
        weights (str, optional): TESKD's ``'cifar'`` (CE 0.2, KD 0.8) or
            ``'imagenet'`` (0.8, 0.2). Defaults by the input size: up to
            64 px CIFAR's. DTSKD has its released recipe's.
        students (Sequence[int]): The student levels.
        method (str): ``'teskd'`` or ``'dtskd'``.

    Returns:
        dict: The values and, under ``'why'``, a comment for each.
    """
    if method not in METHODS:
        raise TeskdConfigError(f'method={method!r} is not one of {METHODS}.')
    if method == 'dtskd' and weights is not None:
        raise TeskdConfigError(
            '--weights sets TESKD\'s loss weights; DTSKD has its released '
            'recipe\'s. Leave --weights out with --method dtskd.')
    path = resolve_config(base)
    try:
        cfg = Config.fromfile(path)
    except Exception as e:
        raise TeskdConfigError(
            f'{base} cannot be read by mmengine {mmengine.__version__}: '
            f'{type(e).__name__}: {str(e).splitlines()[0]}') from None
    size = input_size(cfg, 'train')
    channels_in = int(cfg.model.backbone.get('in_channels', 3))
    check_stock_teacher(cfg)
    outputs = backbone_outputs(dict(cfg.model.backbone), size, channels_in)
    teacher = teacher_output(cfg, outputs)
    stages = pick_stages(outputs, teacher, size)
    by_index = {i: (c, s) for i, c, s in outputs}
    channels = tuple(by_index[i][0] for i in stages)
    if method == 'dtskd' and width not in (None, channels[-1]):
        raise TeskdConfigError(
            f'DTSKD fuses at the last stage\'s width ({channels[-1]}), as '
            'its pooled last stage is used as is; leave --width out with '
            '--method dtskd.')
    weights = weights or ('cifar' if max(size) <= 64 else 'imagenet')
    if weights not in WEIGHTS:
        raise TeskdConfigError(f'weights={weights!r} is not one of '
                               f'{tuple(WEIGHTS)}.')
    head = cfg.model.head
    plan = dict(
        base=base,
        method=method,
        has_neck=bool(cfg.model.get('neck')),
        out_indices=stages,
        in_channels=channels,
        width=int(channels[-1] if width is None else width),
        num_classes=int(head.num_classes),
        topk=tuple(head.get('topk', (1, ))),
        eval_topk=evaluator_topk(cfg, head),
        students=tuple(students),
        weights=WEIGHTS[weights],
        custom_hooks=list(cfg.get('custom_hooks') or []),
        size=size,
        stride=max(1, size[0] // by_index[teacher][1][0]),
    )
    shapes = ', '.join(f'{by_index[i][0]}@{by_index[i][1][0]}x'
                       f'{by_index[i][1][1]}' for i in stages)
    plan['why'] = dict(
        out_indices=f'four outputs that halve ({shapes} at '
        f'{size[0]}x{size[1]}), the last the one the stock head reads',
        in_channels='the channels of those outputs',
        width='the fused width: ' + (
            'the last stage\'s, as in the paper' if not width else
            f'{width}, set by --width'),
        branch='the branch width is the teacher\'s, so that the feature '
        'loss compares like with like',
        weights=f'the {weights} recipe of the paper: alpha1 = '
        f'{WEIGHTS[weights][0]}, alpha2 = {WEIGHTS[weights][1]}',
        loss='TESKD\'s cross-entropy replaces the stock head\'s loss ('
        f'{head.get("loss", {}).get("type", "CrossEntropyLoss")})',
    )
    if method == 'dtskd':
        plan['why'].update(
            width='DTSKD fuses pooled vectors at the last stage\'s width',
            weights='DTSKD\'s released recipe: historical teacher 0.2 (the '
            'teacher\'s term x3), KD 0.8, T = 4, cosine decay of the '
            'label\'s share over the run',
            loss='DTSKD\'s soft cross-entropy replaces the stock head\'s '
            f'loss ({head.get("loss", {}).get("type", "CrossEntropyLoss")})'
            '; num_samples=None sizes the memory from the data as they '
            'come (set it to the training set\'s size to allocate it once)')
        del plan['why']['branch']  # the students are one Linear each
    return plan


def _comment(text: str, indent: int) -> str:
    """A comment wrapped to 79 columns, at ``indent`` spaces."""
    pad = ' ' * indent
    return textwrap.fill(
        text[0].upper() + text[1:] + '.', 79, initial_indent=pad + '# ',
        subsequent_indent=pad + '# ').lstrip()


def base_reference(base: str, folder: str) -> str:
    """How a config in ``folder`` names ``base``: ``mmpretrain::`` as it is,
    a file relative to ``folder`` (mmengine resolves ``_base_`` from the
    config's own folder)."""
    if base.startswith('mmpretrain::'):
        return base
    return osp.relpath(resolve_config(base), osp.abspath(folder))


def render_teskd(plan: Dict, folder: str) -> str:
    """The text of the TESKD config: the stock one plus what TESKD changes.

    Args:
        plan (dict): From :func:`plan_teskd`.
        folder (str): Where the config will lie; a file base is named
            relative to it.
    """
    why = {k: _comment(v, 8 if k not in ('out_indices', ) else 4)
           for k, v in plan['why'].items()}
    why['weights'] = _comment(
        f"{plan['why']['weights']}; {plan['why']['loss']}", 8)
    ce, kd = plan['weights']
    neck_delete = '_delete_=True,\n        ' if plan['has_neck'] else ''
    # The reliability hooks the stock config lacks; the checkpoint hook is
    # a default hook.
    present = {h.get('type') for h in plan['custom_hooks']}
    hooks = [repr(h) for h in plan['custom_hooks']] + [
        f"dict(type='{t}')" for t in RELIABILITY_HOOKS[1:]
        if t not in present]
    hooks_text = ',\n    '.join(hooks)
    if plan['method'] == 'dtskd':
        neck = f'''neck=dict(
        {neck_delete}type='DTSKDNeck',
        {why['in_channels']}
        in_channels={plan['in_channels']},
        {why['width']}
        students={plan['students']}),'''
        head = f'''head=dict(
        _delete_=True,
        type='DTSKDHead',
        num_classes={plan['num_classes']},
        in_channels={plan['in_channels'][-1]},
        students={plan['students']},
        topk={plan['topk']},
        {why['weights']}
        loss=dict(type='DTSKDLoss', num_samples=None)))'''
    else:
        neck = f'''neck=dict(
        {neck_delete}type='MFMNeck',
        {why['in_channels']}
        in_channels={plan['in_channels']},
        {why['width']}
        out_channels={plan['width']},
        students={plan['students']}),'''
        head = f'''head=dict(
        _delete_=True,
        type='MultiBranchClsHead',
        num_classes={plan['num_classes']},
        in_channels={plan['in_channels'][-1]},
        branch_in_channels={plan['width']},
        {why['branch']}
        branch_channels={plan['in_channels'][-1]},
        students={plan['students']},
        topk={plan['topk']},
        {why['weights']}
        loss=dict(type='TESKDLoss', ce_weight={ce}, kd_weight={kd})))'''
    title = f"{plan['method'].upper()} on {plan['base']}"
    return f'''# {title}, written by tools/teskd_config.py.
_base_ = '{base_reference(plan['base'], folder)}'
custom_imports = dict(imports=['teskd_mm'], allow_failed_imports=False)

model = dict(
    {why['out_indices']}
    backbone=dict(out_indices={plan['out_indices']}),
    {neck}
    {head}

# The teacher's top-k as before, and each student's and the ensemble's.
val_evaluator = dict(type='MultiBranchAccuracy', topk={plan['eval_topk']})
test_evaluator = val_evaluator

# The reliability hooks (atomic checkpoints, exact resume, loss checks)
# after the stock config's own.
default_hooks = dict(checkpoint=dict(type='{RELIABILITY_HOOKS[0]}'))
custom_hooks = [
    {hooks_text},
]
'''


def verify_plan(plan: Dict, text: str, folder: str) -> None:
    """The TESKD config trains a step, and its teacher is the stock network.

    Args:
        plan (dict): From :func:`plan_teskd`.
        text (str): From :func:`render_teskd` for ``folder``.
        folder (str): Where to write the config for loading it (the
            caller's temporary folder).
    """
    path = osp.join(folder, 'teskd_check.py')
    with open(path, 'w') as f:
        f.write(text)
    cfg = Config.fromfile(path)
    stock_cfg = Config.fromfile(resolve_config(plan['base']))
    model = build_model(cfg)
    model.train()
    # DTSKD's loss reads the epoch from the Runner's message hub.
    hub = MessageHub.get_instance(f'teskd_config_check_{id(model)}')
    hub.update_info('epoch', 0)
    hub.update_info('max_epochs', cfg.train_cfg.get('max_epochs', 1))
    # At twice the total stride, where the stages still halve; the full
    # input size would only make the check slower.
    stride = plan['stride']
    size = (2 * stride, 2 * stride) if 2 * stride < min(plan['size']) \
        else plan['size']
    try:
        try:
            losses = model(**model.data_preprocessor(
                dummy_batch(cfg, 'train', 2, size=size), True), mode='loss')
        except Exception:
            # Some backbones need the full size (e.g. a window larger than
            # the small map).
            size = plan['size']
            losses = model(**model.data_preprocessor(
                dummy_batch(cfg, 'train', 2, size=size), True), mode='loss')
    except Exception as e:
        raise TeskdConfigError(
            f'The TESKD model does not run at {size[0]}x{size[1]}: '
            f'{type(e).__name__}: {e}') from e
    assert all(torch.isfinite(v).all() for v in losses.values())
    stock = _build(stock_cfg.model)
    teacher = _build(stock_model_cfg(cfg.model))
    theirs, ours = stock.state_dict(), teacher.state_dict()
    if set(theirs) != set(ours) or any(
            theirs[k].shape != ours[k].shape for k in theirs):
        raise TeskdConfigError(
            'The teacher TESKD would deploy has other weights than the stock '
            f'model ({len(set(theirs) ^ set(ours))} keys differ), so it '
            'would not be the stock network; no config is written.')
    # Keys and shapes are compared above; strict loading would fail on
    # backbones that drop recomputed buffers when loading (SwinV2).
    teacher.load_state_dict(theirs, strict=False)
    stock.eval(), teacher.eval()
    x = torch.randn(2, int(cfg.model.backbone.get('in_channels', 3)),
                    *plan['size'])
    with torch.no_grad():
        a, b = stock(x, mode='tensor'), teacher(x, mode='tensor')
    if a.shape != b.shape or not torch.allclose(a, b, rtol=1e-4, atol=1e-5):
        raise TeskdConfigError(
            'The teacher TESKD would deploy has the stock weights but gives '
            'other logits (it is backbone -> GlobalAveragePooling -> Linear '
            'on the last output, where the stock model computes otherwise), '
            'so no config is written.')


def write_teskd_config(base: str,
                       out: str,
                       width: Optional[int] = None,
                       weights: Optional[str] = None,
                       students: Sequence[int] = (1, 2, 3),
                       method: str = 'teskd') -> Dict:
    """Plan, verify and write the TESKD (or DTSKD) config of ``base`` to
    ``out``.

    Nothing is written unless the verification passes; the folder of
    ``out`` is made if missing. Arguments as :func:`plan_teskd`.

    Returns:
        dict: The plan, with a comment for each value under ``'why'``.
    """
    plan = plan_teskd(base, width, weights, students, method)
    with tempfile.TemporaryDirectory() as tmp:
        verify_plan(plan, render_teskd(plan, tmp), tmp)
    folder = osp.dirname(osp.abspath(out))
    # The same config, its _base_ named from where it is written.
    text = render_teskd(plan, folder)
    os.makedirs(folder, exist_ok=True)
    with open(out, 'w') as f:
        f.write(text)
    return plan
