"""Try tools/teskd_config.py on one ImageNet-1k config of every mmpretrain
family, the smallest by its metafile's parameter count.

    python tools/analysis/teskd_config_sweep.py [--families convnext deit ...]
        [--method teskd|dtskd] --out TABLE.md

Each config is planned and verified as the tool does (a training step of
the TESKD model, the deployed teacher equal to the stock network) without
writing it; the table gives, per family, the config, its parameters and
either the outputs TESKD would use or the refusal as the tool words it.
Errors other than refusals are reported as such: they are bugs.
"""
import argparse
import glob
import os.path as osp
import sys
import tempfile
import time
from typing import List, Optional

import yaml

from teskd_mm.utils.cli import refuse_existing_out


def smallest_in1k(folder: str) -> Optional[dict]:
    """The ImageNet-1k classification model of a family's metafile with the
    fewest parameters whose config ships with mmpretrain."""
    root = osp.dirname(osp.dirname(folder))  # the .mim folder
    found = []
    for path in glob.glob(osp.join(folder, 'metafile.yml')):
        with open(path) as f:
            meta = yaml.safe_load(f) or {}
        for model in meta.get('Models') or []:
            config = model.get('Config') or ''
            params = (model.get('Metadata') or {}).get('Parameters')
            tasks = {r.get('Task') for r in model.get('Results') or []}
            datasets = {r.get('Dataset') for r in model.get('Results') or []}
            if params and 'Image Classification' in tasks and \
                    'ImageNet-1k' in datasets and 'in1k' in config and \
                    osp.isfile(osp.join(root, config)):
                found.append((int(params), config))
    if not found:
        return None
    params, config = min(found)
    return dict(params=params, config=config[len('configs/'):])


def sweep_one(config: str, method: str) -> str:
    """What the tool says of ``mmpretrain::<config>``."""
    from teskd_mm.apis.teskd_config import plan_teskd, render_teskd, \
        verify_plan
    try:
        plan = plan_teskd(f'mmpretrain::{config}', method=method)
        with tempfile.TemporaryDirectory() as tmp:
            verify_plan(plan, render_teskd(plan, tmp), tmp)
    except ValueError as e:  # refusals, with the tool's words
        return f'refused: {e}'
    except Exception as e:  # anything else is a bug
        return f'**error** {type(e).__name__}: {e}'
    return (f'ok: out_indices={plan["out_indices"]}, '
            f'channels={plan["in_channels"]}')


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--families', nargs='+',
                        help='folders of mmpretrain/.mim/configs (default: '
                        'every one with an ImageNet-1k classifier)')
    parser.add_argument('--method', choices=['teskd', 'dtskd'],
                        default='teskd')
    parser.add_argument('--out', required=True, help='the Markdown table')
    args = parser.parse_args(argv)
    refuse_existing_out(parser, args.out)
    import mmpretrain
    configs = osp.join(osp.dirname(mmpretrain.__file__), '.mim', 'configs')
    families = args.families or sorted(
        d for d in glob.glob(osp.join(configs, '*'))
        if osp.isfile(osp.join(d, 'metafile.yml')))
    rows = []
    for family in families:
        folder = family if osp.isabs(family) else osp.join(configs, family)
        pick = smallest_in1k(folder)
        if pick is None:
            continue
        start = time.time()
        result = sweep_one(pick['config'], args.method).replace('\n', ' ')
        rows.append(f'| {osp.basename(folder)} | `{pick["config"]}` | '
                    f'{pick["params"] / 1e6:.1f} M | {result} |')
        print(rows[-1], f'({time.time() - start:.0f} s)', flush=True)
    with open(args.out, 'w') as f:
        f.write(f'| family | config | parameters | tools/teskd_config.py '
                f'--method {args.method} |\n| --- | --- | ---: | --- |\n')
        f.write('\n'.join(rows) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
