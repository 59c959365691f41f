"""Draw a t-SNE map of the pooled feature of every head of a checkpoint.

    python tools/analysis/tsne.py CONFIG CHECKPOINT --out-dir DIR
        [--split test|val|train] [--num-samples 500] [--classes N|a,b,...]
        [--perplexity 30] [--seed 0] [--cfg-options KEY=VALUE ...]
        [--overwrite] [--trust-checkpoint]

Writes DIR/tsne_<checkpoint name>.png (an existing one is replaced only
with --overwrite): one panel per head (the teacher and
each student of a TESKD or DTSKD model; the teacher alone for a deployed
stock model), each point a sample coloured by its true class. The samples
are taken in the data set's order, the same number from each chosen class
where the classes have enough, so the map is the same on every run; the
training split is read through the test pipeline, without augmentation.
"""
import argparse
import os
import os.path as osp
import sys
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple

if TYPE_CHECKING:
    import numpy as np

MISSING = 'scikit-learn is not installed; pip install scikit-learn'
PANEL_INCHES, DPI = 4.0, 100


class ToolError(Exception):
    """A problem with the tool's inputs, shown as one line."""


def map_name(checkpoint: str) -> str:
    """The map's name: the checkpoint's file name without extension."""
    return osp.splitext(osp.basename(checkpoint))[0]


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='the config the model was trained '
                        'with (or its deployed config)')
    parser.add_argument('checkpoint', help='a checkpoint of that config')
    parser.add_argument('--out-dir', required=True, help='folder of the PNG')
    parser.add_argument('--split', choices=('test', 'val', 'train'),
                        default='test', help='data loader to read')
    parser.add_argument('--num-samples', type=int, default=500,
                        help='samples in the map (default 500)')
    parser.add_argument('--classes', help='the first N classes, or class '
                        'names separated by commas (default: up to 10)')
    parser.add_argument('--perplexity', type=float, default=30.0,
                        help='t-SNE perplexity, below the sample count')
    parser.add_argument('--seed', type=int, default=0, help='t-SNE seed')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of the config')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace the map of this checkpoint if --out-dir '
                        'holds one')
    from teskd_mm.utils.cli import add_trust_checkpoint, check_output
    add_trust_checkpoint(parser)
    args = parser.parse_args(argv)
    check_output(parser, '--out-dir', args.out_dir, folder=True)
    args.out = osp.join(args.out_dir, f'tsne_{map_name(args.checkpoint)}.png')
    if osp.exists(args.out) and not args.overwrite:
        parser.error(f'{args.out} exists (a map of a checkpoint named '
                     f'{osp.basename(args.checkpoint)}); choose another '
                     '--out-dir, or pass --overwrite to replace it')
    if args.num_samples < 1 or args.perplexity <= 0:
        parser.error('--num-samples and --perplexity must be positive')
    return args


def load_model(cfg, checkpoint: str):
    """Build the config's model and load the checkpoint into it, checked
    first, as ``load_state_dict(strict=False)`` would only warn."""
    import re
    from teskd_mm.utils import (ConfigCheckError, check_checkpoint_fits,
                                read_checkpoint)
    from teskd_mm.utils.preflight.model import build_model
    model = build_model(cfg)
    if not hasattr(model, 'head') or not hasattr(model, 'extract_feat'):
        raise ToolError(f'the model is a {type(model).__name__}, not an '
                        'image classifier with a head')
    try:
        ckpt = read_checkpoint(checkpoint)
    except ConfigCheckError as e:
        raise ToolError(f'checkpoint {e}') from e
    check_checkpoint_fits(model, ckpt, checkpoint, cfg)
    state = ckpt.get('state_dict', ckpt)
    model.load_state_dict(
        {re.sub(r'^module\.', '', k): v for k, v in state.items()},
        strict=False)
    return model.eval()


def dataset_cfg(cfg, split: str) -> dict:
    """The split's data set config, wrappers (repeat, class balance) taken
    off, with the test pipeline for the training split."""
    import copy
    loaders = [s for s in ('test', 'val', 'train')
               if cfg.get(f'{s}_dataloader')]
    if split not in loaders:
        raise ToolError(f'the config has no {split}_dataloader; choose '
                        f'--split among {", ".join(loaders) or "(none)"}')

    def inner(loader: dict) -> dict:
        ds = copy.deepcopy(loader['dataset'])
        while 'dataset' in ds:
            ds = ds['dataset']
        return ds

    ds = inner(cfg[f'{split}_dataloader'])
    # Random crops and flips would blur the map: read them as tested.
    tested = [inner(cfg[f'{s}_dataloader']) for s in loaders if s != 'train']
    if split == 'train' and 'pipeline' in ds and tested:
        ds['pipeline'] = tested[0].get('pipeline', ds['pipeline'])
    return ds


def choose_classes(names: List[str], spec: Optional[str]) -> List[int]:
    """The class indices ``--classes`` names (default: the first 10)."""
    if spec is None:
        return list(range(min(10, len(names))))
    if spec.strip().isdigit():
        if not 1 <= int(spec) <= len(names):
            raise ToolError(f'--classes {spec}: the data set has '
                            f'{len(names)} classes')
        return list(range(int(spec)))
    wanted = list(dict.fromkeys(s.strip() for s in spec.split(',')
                                if s.strip()))
    unknown = [w for w in wanted if w not in names]
    if unknown:
        raise ToolError(f'--classes: unknown class {", ".join(unknown)}; '
                        f'the known ones are {", ".join(names)}')
    return [names.index(w) for w in wanted]


def choose_samples(labels: Sequence[int], classes: List[int],
                   num: int) -> List[int]:
    """Up to ``num`` indices in data set order, taking the classes in turn
    so that a folder sorted by class does not fill the map with one."""
    per_class = {c: [i for i, y in enumerate(labels) if y == c]
                 for c in classes}
    chosen = []
    for rank in range(max(map(len, per_class.values()), default=0)):
        chosen += [v[rank] for v in per_class.values() if rank < len(v)]
    return sorted(chosen[:num])


def extract(model, dataset, indices: List[int],
            batch_size: int = 32) -> Tuple[Dict[str, 'np.ndarray'], list]:
    """The pooled feature of every head, and the labels, of the samples."""
    import numpy as np
    import torch
    from mmengine.dataset import pseudo_collate
    from teskd_mm.models.heads import SelfKDHead
    feats: Dict[str, list] = {}
    labels = []
    for start in range(0, len(indices), batch_size):
        batch = pseudo_collate(
            [dataset[i] for i in indices[start:start + batch_size]])
        with torch.no_grad():
            data = model.data_preprocessor(batch, False)
            x = model.extract_feat(data['inputs'])
            if isinstance(model.head, SelfKDHead):
                heads = model.head.branch_features(x)
            else:
                # LinearClsHead.pre_logits takes the neck's last output.
                heads = {'teacher': model.head.pre_logits(x)}
        for name, f in heads.items():
            feats.setdefault(name, []).append(f.flatten(1).float().numpy())
        labels += [int(s.gt_label[0]) for s in data['data_samples']]
    return {k: np.concatenate(v) for k, v in feats.items()}, labels


def draw(embedded: Dict[str, 'np.ndarray'], dims: Dict[str, int],
         labels: List[int], names: List[str], classes: List[int], title: str,
         path: str) -> Tuple[int, int]:
    """Draw one panel per head and save the PNG; return its size."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import numpy as np
    n = len(embedded)
    # As many legend columns as the widest class name lets fit the width.
    entry = 0.45 + 0.07 * max(len(names[c]) for c in classes)
    ncol = max(1, min(len(classes), int(PANEL_INCHES * n // entry)))
    rows = -(-len(classes) // ncol)
    fig, axes = plt.subplots(
        1, n, figsize=(PANEL_INCHES * n, PANEL_INCHES + 0.6 + 0.22 * rows),
        dpi=DPI, layout='constrained', squeeze=False)
    k = len(classes)
    cmap = matplotlib.colormaps['tab10' if k <= 10 else 'tab20' if k <= 20
                                else 'turbo'].resampled(max(k, 10))
    labels = np.asarray(labels)
    for ax, (head, xy) in zip(axes[0], embedded.items()):
        for i, c in enumerate(classes):
            pts = xy[labels == c]
            ax.scatter(pts[:, 0], pts[:, 1], s=14, color=cmap(i),
                       label=names[c], edgecolors='none')
        ax.set_title(f'{head.replace("student", "student ")} '
                     f'({dims[head]}-d)')
        # t-SNE coordinates have no meaning of their own.
        ax.set_xticks([])
        ax.set_yticks([])
    handles, texts = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, texts, loc='outside lower center', ncol=ncol,
               fontsize='small', markerscale=1.5, frameon=False)
    fig.suptitle(title)
    fig.savefig(path, dpi=DPI)
    size = fig.canvas.get_width_height()
    plt.close(fig)
    return size


def collect(args: argparse.Namespace) -> tuple:
    """Features per head, labels, class names and chosen class indices."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import DATASETS
    if not osp.isfile(args.config):
        raise ToolError(f'config {args.config} does not exist')
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    ds_cfg = dataset_cfg(cfg, args.split)
    model = load_model(cfg, args.checkpoint)
    try:
        dataset = DATASETS.build(ds_cfg)
        labels = [int(y) for y in dataset.get_gt_labels()]
    except Exception as e:
        raise ToolError(f'the {args.split} data set cannot be read: '
                        f'{type(e).__name__}: {e}') from e
    names = list(dataset.metainfo.get('classes')
                 or [str(c) for c in range(max(labels, default=-1) + 1)])
    classes = choose_classes(names, args.classes)
    indices = choose_samples(labels, classes, args.num_samples)
    if not indices:
        raise ToolError(f'the {args.split} split has no sample of the '
                        'chosen classes')
    if args.perplexity >= len(indices):
        raise ToolError(
            f'--perplexity {args.perplexity:g} must be below the number of '
            f'samples ({len(indices)}); lower it or take more samples')
    feats, labels = extract(model, dataset, indices)
    return feats, labels, names, classes


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        # Before anything else loads: the one optional dependency.
        from sklearn.manifold import TSNE
    except ImportError:
        print(f'tsne: error: {MISSING}', file=sys.stderr)
        return 2
    args = parse_args(argv)
    from teskd_mm.utils import ConfigCheckError
    from teskd_mm.utils.cli import trust_if_asked
    trust_if_asked(args, args.checkpoint)
    try:
        feats, labels, names, classes = collect(args)
    except (ToolError, ConfigCheckError) as e:
        print(f'tsne: error: {e}', file=sys.stderr)
        return 2
    # The exact gradient is quicker than Barnes-Hut up to a few hundred
    # samples (and exact); beyond, its n^2 cost takes over.
    method = 'exact' if len(labels) <= 500 else 'barnes_hut'
    embedded = {
        name: TSNE(n_components=2, perplexity=args.perplexity, init='pca',
                   learning_rate='auto', max_iter=1000, method=method,
                   random_state=args.seed).fit_transform(f)
        for name, f in feats.items()
    }
    stem = map_name(args.checkpoint)
    os.makedirs(args.out_dir, exist_ok=True)
    path = args.out
    title = (f'{stem}: {len(labels)} {args.split} samples, '
             f'perplexity {args.perplexity:g}')
    width, height = draw(embedded, {k: v.shape[1] for k, v in feats.items()},
                         labels, names, classes, title, path)
    print(f'panels: {", ".join(embedded)}')
    print(f'figure: {width}x{height} px')
    print(path)
    return 0


if __name__ == '__main__':
    sys.exit(main())
