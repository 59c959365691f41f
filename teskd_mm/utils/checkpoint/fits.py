"""Whether a checkpoint belongs to the model a config builds."""
import re
from typing import Any, Dict, Optional

import torch
import torch.nn as nn
from mmengine.config import Config

from ..config_diff import config_differences
from ..errors import ConfigCheckError
from .loading import saved_config


def check_checkpoint_fits(model: nn.Module,
                          ckpt: Dict[str, Any],
                          path: str,
                          cfg: Optional[Config] = None,
                          exact: bool = False) -> None:
    """Every weight the model has must be in the checkpoint, same shape.

    mmengine loads with ``strict=False`` and only warns, so a checkpoint of
    another config would otherwise be tested or resumed half random.
    Entries that are empty in a freshly built model (the DTSKD prediction
    memory, sized by the data) are checked by their module when loaded.
    Where the checkpoint holds its training config, the message names the
    model settings that changed since.

    Args:
        model (nn.Module): The model the config builds.
        ckpt (dict): The checkpoint, from :func:`read_checkpoint`.
        path (str): Its file, for messages.
        cfg (Config, optional): The config that built ``model``.
        exact (bool): Also refuse weights the model does not have, as a
            resumed run must continue the very model (its optimizer state
            is per parameter). Defaults to False.
    """
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise ConfigCheckError(f'{path} holds no state_dict; it is not a '
                               'model checkpoint written by tools/train.py.')
    state = {re.sub(r'^module\.', '', k): v for k, v in state.items()}
    wanted = {
        k: v
        for k, v in model.state_dict().items()
        if not (torch.is_tensor(v) and v.numel() == 0)
    }
    missing = [k for k in wanted if k not in state]
    own = model.state_dict()
    extra = [
        k for k in state
        if exact and k not in own and hasattr(state[k], 'shape')
    ]
    wrong = [
        k for k in wanted if k in state and hasattr(state[k], 'shape')
        and tuple(state[k].shape) != tuple(wanted[k].shape)
    ]
    if missing or wrong or extra:
        detail = []
        if missing:
            detail.append(f'{len(missing)} of the model\'s weights are '
                          f'missing, e.g. {missing[:3]}')
        if extra:
            detail.append(f'{len(extra)} weights are not in the model, e.g. '
                          f'{extra[:3]}')
        if wrong:
            k = wrong[0]
            detail.append(f'{len(wrong)} have another shape, e.g. {k} is '
                          f'{tuple(state[k].shape)} in the checkpoint and '
                          f'{tuple(wanted[k].shape)} in the config')
        saved = saved_config(ckpt, path)
        if cfg is not None and saved is not None:
            changed = config_differences(cfg, saved, ('model', ))
            if changed:
                detail.insert(0, 'the model config changed since training: '
                              + '; '.join(changed[:5]))
        raise ConfigCheckError(
            f'{path} does not belong to this config: {"; ".join(detail)}. '
            'Pass the config the checkpoint was trained with.')
