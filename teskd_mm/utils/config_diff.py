"""What one config sets otherwise than another, key by key."""
from typing import Any, Dict, List, Sequence

from mmengine.config import Config

# What makes a model compute what it computed in training.
MODEL_KEYS = ('model', 'data_preprocessor',
              'test_dataloader.dataset.pipeline')


def _flat(node: Any, prefix: str = '') -> Dict[str, Any]:
    """Dotted keys to leaf values; lists of dicts are indexed."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            out.update(_flat(v, f'{prefix}.{k}' if prefix else str(k)))
        return out
    if isinstance(node, (list, tuple)) and any(
            isinstance(v, dict) for v in node):
        out = {}
        for i, v in enumerate(node):
            out.update(_flat(v, f'{prefix}.{i}'))
        return out
    return {prefix: list(node) if isinstance(node, tuple) else node}


def _get(cfg: Config, dotted: str) -> Any:
    node: Any = cfg.to_dict()
    for part in dotted.split('.'):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def config_differences(current: Config,
                       trained: Config,
                       keys: Sequence[str] = MODEL_KEYS) -> List[str]:
    """The leaves under ``keys`` that ``current`` sets otherwise than
    ``trained``, each as ``'<key> is <trained> in training and <current>
    here'``."""
    diffs = []
    for key in keys:
        a = _flat(_get(trained, key), key)
        b = _flat(_get(current, key), key)
        for k in sorted(set(a) | set(b)):
            if k.endswith('._scope_') or a.get(k) == b.get(k):
                continue
            diffs.append(f'{k} is {a.get(k)!r} in training and '
                         f'{b.get(k)!r} here')
    return diffs
