"""Turn a trained TESKD model into a stock mmpretrain classifier."""
import copy
import os.path as osp
from typing import Any, Dict, Optional, Tuple

import torch
from mmengine.config import Config, ConfigDict

from mmpretrain import registry
from mmpretrain.registry import HOOKS, MODELS

from ..models.heads import SelfKDHead
from ..utils.checkpoint import (UnsafeCheckpointError, atomic_write,
                                read_checkpoint, saved_config)
from ..utils.config_diff import MODEL_KEYS, config_differences
from ..utils.errors import ConfigCheckError
from ..utils.inputs import dummy_batch
from ..utils.outputs import output_problem
from ..utils.preflight.model import build_model


class DeployError(ValueError):
    """A config or checkpoint that cannot be deployed; nothing was written."""


# Only these types of this package stand in for a stock parent; a model
# (e.g. the CIFAR VGG, which renumbers VGG's stages) is a component of its
# own and keeps its name.
STAND_IN_REGISTRIES = ('DATASETS', 'METRICS', 'TRANSFORMS', 'HOOKS')


def _stock_type(name: str) -> str:
    """The stock mmpretrain type a type of this package stands in for."""
    for reg_name in ('DATASETS', 'METRICS', 'TRANSFORMS', 'MODELS', 'HOOKS'):
        cls = getattr(registry, reg_name).get(name)
        if cls is None or not cls.__module__.startswith('teskd_mm'):
            continue
        if reg_name not in STAND_IN_REGISTRIES:
            return name
        for base in cls.__mro__[1:]:
            if base.__module__.startswith(('mmpretrain', 'mmengine')) and \
                    getattr(registry, reg_name).get(base.__name__) is base:
                return base.__name__
        raise DeployError(
            f'{name!r} comes from teskd_mm and has no stock mmpretrain '
            'counterpart, so the deployed config could not name it; replace '
            'it in the config before deploying.')
    return name


def _to_stock(node: Any) -> Any:
    """Replace every ``type`` of this package by its stock parent."""
    if isinstance(node, dict):
        out = {k: _to_stock(v) for k, v in node.items()}
        if isinstance(out.get('type'), str):
            out['type'] = _stock_type(out['type'])
        return out
    if isinstance(node, (list, tuple)):
        return type(node)(_to_stock(v) for v in node)
    return node


def _stock_hooks(hooks: list) -> list:
    """``custom_hooks`` without this package's own hooks (exact resume and
    loss checks while training), which have no stock counterpart."""
    kept = []
    for hook in hooks:
        cls = HOOKS.get(hook.get('type')) if isinstance(
            hook.get('type'), str) else None
        if cls is not None and cls.__module__.startswith('teskd_mm') and \
                not any(b.__module__.startswith(('mmengine', 'mmpretrain'))
                        for b in cls.__mro__[1:-1]
                        if b.__name__ != 'Hook'):
            continue
        kept.append(hook)
    return kept


def _names_package_model(node: Any) -> bool:
    """Whether a config names a model type of this package."""
    if isinstance(node, dict):
        name = node.get('type')
        if isinstance(name, str) and getattr(
                MODELS.get(name), '__module__', '').startswith('teskd_mm'):
            return True
        return any(_names_package_model(v) for v in node.values())
    if isinstance(node, (list, tuple)):
        return any(_names_package_model(v) for v in node)
    return False


def self_kd_head(model_cfg: dict) -> Optional[type]:
    """The class of the config's head if it is a self-distillation head
    (:class:`~teskd_mm.models.heads.SelfKDHead`), else None."""

    head = (model_cfg.get('head') or {}).get('type')
    cls = MODELS.get(head) if isinstance(head, str) else head
    return cls if isinstance(cls, type) and issubclass(cls, SelfKDHead) \
        else None


def stock_model_cfg(model_cfg: dict) -> dict:
    """The teacher of a self-distillation model config as a stock
    ``ImageClassifier``, as its head declares it
    (:meth:`~teskd_mm.models.heads.SelfKDHead.deployed_model_cfg`), with
    this package's types replaced by their stock parents.

    Args:
        model_cfg (dict): The ``model`` of a TESKD or DTSKD config.
    """
    head = self_kd_head(model_cfg)
    if head is None:
        given = (model_cfg.get('head') or {}).get('type')
        raise DeployError(
            f'The config\'s head is {given!r}, not a self-distillation head '
            '(one implementing SelfKDHead, as MultiBranchClsHead and '
            'DTSKDHead do): this is not a TESKD model config. A plain '
            'classifier needs no deployment; use its config and checkpoint '
            'as they are.')
    return _to_stock(head.deployed_model_cfg(model_cfg))


def load_checkpoint(checkpoint: str) -> Tuple[Dict[str, torch.Tensor], dict]:
    """Read a checkpoint's ``state_dict`` and ``meta``, with clear errors.

    The file is checked as every tool checks it (each member against its
    CRC, so damaged bytes are not deployed as weights) and unpickled
    safely (:func:`~teskd_mm.utils.checkpoint.read_checkpoint`).
    """
    try:
        ckpt = read_checkpoint(checkpoint)
    except UnsafeCheckpointError as e:
        raise DeployError(str(e)) from None
    except ConfigCheckError as e:
        raise DeployError(
            f'Checkpoint {e}; use a checkpoint written completely by '
            'tools/train.py.') from None
    meta = {}
    if isinstance(ckpt, dict) and isinstance(ckpt.get('state_dict'), dict):
        meta = ckpt.get('meta') or {}
        ckpt = ckpt['state_dict']
    if not isinstance(ckpt, dict) or not all(
            isinstance(v, torch.Tensor) for v in ckpt.values()):
        raise DeployError(
            f'{checkpoint} holds no state_dict of tensors; it is not a model '
            'checkpoint written by tools/train.py.')
    return ckpt, meta


def trained_config(config: str, ckpt: dict, checkpoint: str,
                   cfg_options: Optional[dict]) -> Config:
    """The config the checkpoint was trained with, checked against the one
    given.

    mmengine saves the whole training config in every checkpoint's
    ``meta['cfg']``, with the command-line overrides applied. The config
    given (with ``cfg_options``) must agree with it on everything that
    defines the model; the trained one is then the one deployed. A
    checkpoint without a saved config deploys with the config given.
    """
    if not osp.isfile(config):
        raise DeployError(f'Config {config} does not exist.')
    given = Config.fromfile(config)
    if cfg_options:
        given.merge_from_dict(cfg_options)
    try:
        trained = saved_config(ckpt, checkpoint)
    except UnsafeCheckpointError as e:
        raise DeployError(str(e)) from None
    if trained is None:
        return given
    diffs = config_differences(given, trained, MODEL_KEYS)
    if diffs:
        shown = '; '.join(diffs[:5]) + ('; ...' if len(diffs) > 5 else '')
        raise DeployError(
            f'{config} does not describe the model the checkpoint was '
            f'trained as: {shown}. Deploy with the config the run dumped '
            'into its work dir, or pass --cfg-options with the values used '
            'in training.')
    return trained


def teacher_state_dict(state: Dict[str, torch.Tensor],
                       stock_model: torch.nn.Module,
                       checkpoint: str = 'the checkpoint'
                       ) -> Dict[str, torch.Tensor]:
    """Pick the teacher's weights for ``stock_model`` out of a TESKD state.

    Args:
        state (dict): The TESKD model's state_dict.
        stock_model (nn.Module): The stock classifier to fill.
        checkpoint (str): The checkpoint's name, for messages.

    Returns:
        dict: Exactly the keys of ``stock_model.state_dict()``.
    """
    if not any(k.startswith(('head.branches.', 'neck.')) for k in state):
        raise DeployError(
            f'{checkpoint} has no student branches (head.branches.*) or '
            'fusion neck (neck.*): it is not a TESKD model checkpoint. '
            'Pass the checkpoint written by training the TESKD config.')
    wanted = stock_model.state_dict()
    missing = [k for k in wanted if k not in state]
    if missing:
        raise DeployError(
            f'{checkpoint} lacks {len(missing)} teacher weights the config '
            f'needs, e.g. {missing[:3]}; the checkpoint and the config do '
            'not belong together.')
    bad = [k for k, v in wanted.items() if state[k].shape != v.shape]
    if bad:
        k = bad[0]
        raise DeployError(
            f'{checkpoint}: {k} has shape {tuple(state[k].shape)} but the '
            f'config builds {tuple(wanted[k].shape)}; the checkpoint and '
            'the config do not belong together.')
    return {k: state[k].clone() for k in wanted}


def check_same_logits(cfg: Config, state: Dict[str, torch.Tensor],
                      stock_model: torch.nn.Module) -> None:
    """The stock model must give the trained teacher's logits.

    Both the training model (with all of ``state``) and the stock model are
    run in eval mode on one batch at the config's test input size; a
    deployed config that picks another backbone stage, or weights that do
    not reach the right layers, give other logits and are refused.
    """
    trained = build_model(cfg)
    trained.load_state_dict(state, strict=False)
    trained.eval(), stock_model.eval()
    batch = dummy_batch(cfg, 'test', batch_size=2)
    with torch.no_grad():
        inputs = trained.data_preprocessor(batch, False)['inputs']
        want = trained(inputs, mode='tensor')
    if not torch.isfinite(want).all():
        # The tolerance below scales with the logits; NaN or inf would
        # make any comparison pass or fail meaninglessly.
        raise DeployError(
            'The trained teacher gives non-finite logits (NaN or inf) on a '
            'test batch: its weights are damaged or training diverged, and '
            'it is not deployed. Deploy an earlier checkpoint of the run.')
    with torch.no_grad():
        try:
            got = stock_model(inputs, mode='tensor')
            diff = (got - want).abs().max().item()
        except RuntimeError as e:  # shapes that do not even fit
            got, diff = None, f'none: it fails with {e}'
    if got is None or not torch.allclose(
            got, want, rtol=1e-4, atol=1e-5 * float(want.abs().max()) +
            1e-6):
        taken = stock_model_cfg(cfg.model)['backbone'].get('out_indices')
        raise DeployError(
            'The deployed model does not give the trained teacher\'s logits '
            f'(max difference {diff}), so it would not be the model that '
            'was trained; the teacher is backbone -> pool -> fc on the '
            'backbone\'s last output, and the stock config takes '
            f'backbone.out_indices={taken}. List the backbone\'s '
            'out_indices in increasing order, the last being the stage the '
            'neck\'s last input is.')


def deploy(config: str,
           checkpoint: str,
           out_dir: str,
           overwrite: bool = False,
           cfg_options: Optional[dict] = None) -> Tuple[str, str]:
    """Write a stock mmpretrain config and a teacher-only checkpoint.

    The deployed config is the one saved in the checkpoint at training
    (command-line overrides included), which the config given must agree
    with on the model, its data preprocessor and the test pipeline.
    Everything is checked before anything is written: a config that
    disagrees, a config or checkpoint that is not a TESKD model, a corrupt
    file, a stock model that would not give the trained teacher's logits, an
    output folder that cannot be written, or existing outputs (without
    ``overwrite``) raise :class:`DeployError` and leave ``out_dir`` as it
    was. The deployed checkpoint keeps the training data set's
    ``dataset_meta`` (class names), as mmpretrain's inferencers read it.

    Args:
        config (str): The TESKD training config.
        checkpoint (str): A checkpoint of that config.
        out_dir (str): Where to write ``<name>_deploy.py`` and
            ``<name>_teacher.pth``.
        overwrite (bool): Replace outputs that already exist. Defaults to
            False.
        cfg_options (dict, optional): Overrides merged into ``config``, as
            the other tools take them.

    Returns:
        tuple[str, str]: The config and checkpoint paths written.
    """
    state, train_meta = load_checkpoint(checkpoint)
    cfg = trained_config(config, dict(meta=train_meta), checkpoint,
                         cfg_options)
    model_cfg = stock_model_cfg(cfg.model)
    stock_model = MODELS.build(copy.deepcopy(model_cfg))
    teacher = teacher_state_dict(state, stock_model, checkpoint)
    # teacher_state_dict gave exactly the stock keys and shapes; strict
    # loading would fail on backbones that drop recomputed buffers when
    # loading (SwinV2); check_same_logits then compares the outputs.
    stock_model.load_state_dict(teacher, strict=False)
    check_same_logits(cfg, state, stock_model)

    deployed = cfg.to_dict()
    deployed.pop('model')
    deployed.pop('custom_imports', None)
    if deployed.get('custom_hooks'):
        deployed['custom_hooks'] = _stock_hooks(deployed['custom_hooks'])
    deployed = _to_stock(deployed)
    deployed['model'] = model_cfg
    # The stock config must build in a process that never imports teskd_mm.
    deployed.pop('data_preprocessor', None)
    if 'data_preprocessor' in cfg:
        model_cfg.setdefault('data_preprocessor',
                             _to_stock(cfg.data_preprocessor.to_dict()))
    if _names_package_model(deployed):
        # A backbone of this package (e.g. VGG_CIFAR) needs it imported.
        deployed['custom_imports'] = dict(
            imports=['teskd_mm'], allow_failed_imports=False)

    name = osp.splitext(osp.basename(config))[0]
    cfg_out = osp.join(out_dir, f'{name}_deploy.py')
    ckpt_out = osp.join(out_dir, f'{name}_teacher.pth')
    problem = output_problem(out_dir, folder=True)
    if problem:
        raise DeployError(f'OUT_DIR {out_dir} {problem}; choose another '
                          'OUT_DIR.')
    existing = [p for p in (cfg_out, ckpt_out) if osp.exists(p)]
    if existing and not overwrite:
        raise DeployError(
            f'{existing} already exist; choose another OUT_DIR or pass '
            '--overwrite to replace them.')
    text = Config(ConfigDict(deployed)).pretty_text
    meta = dict(source_config=osp.abspath(config),
                source_checkpoint=osp.abspath(checkpoint))
    if train_meta.get('dataset_meta'):
        meta['dataset_meta'] = train_meta['dataset_meta']
    # Each file appears only once complete (a killed deploy leaves no
    # truncated file); plain tensors and strings only, so that the
    # checkpoint loads with torch's weights_only=True.
    atomic_write(ckpt_out,
                 lambda f: torch.save(dict(state_dict=teacher, meta=meta), f))
    atomic_write(cfg_out, lambda f: f.write(text.encode('utf-8')))
    return cfg_out, ckpt_out
