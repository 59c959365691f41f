"""Draw validation top-1 per epoch of finished runs and tabulate it.

    python tools/analysis/plot_curves.py WORK_DIR [WORK_DIR ...]
        --out-dir DIR [--names NAME ...] [--dpi 80] [--force]

Each WORK_DIR is the ``work_dir`` of an mmengine training run (or one
``scalars.json`` file). All of its ``<timestamp>/vis_data/scalars.json`` are
read in time order, so a run continued with ``--resume`` reads as one run; an
epoch that was evaluated twice keeps its later value.

The curves are those that :class:`MultiBranchAccuracy` (or mmpretrain's
``Accuracy``) logs: ``accuracy/top1`` is the teacher (the deployed model;
named ``model`` in a run without students), ``accuracy/student{b}_top1`` the
student at level ``b`` and ``accuracy/ensemble_top1`` the mean of all heads,
when they are there.

Written to ``--out-dir``:
    curves.png   one panel per run with all its heads, and one panel with
                 the deployed model of every run when there are several
    summary.md   final and best top-1 of every head of every run
    summary.png  the same table as an image
"""
import argparse
import glob
import json
import os
import os.path as osp
import re
import sys
from typing import Dict, List, Optional, Sequence, Tuple

TEACHER_KEY = 'accuracy/top1'
ENSEMBLE_KEY = 'accuracy/ensemble_top1'
STUDENT_KEY = re.compile(r'^accuracy/student(\d+)_top1$')
OUTPUTS = ('curves.png', 'summary.md', 'summary.png')

# head name -> {epoch: top-1}
Curves = Dict[str, Dict[int, float]]


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Plot validation top-1 per epoch of training runs')
    parser.add_argument(
        'runs', nargs='+', help='work dirs of training runs, or scalars.json '
        'files')
    parser.add_argument(
        '--out-dir', required=True, help='folder for the PNGs and summary.md')
    parser.add_argument(
        '--names', nargs='+', help='a name per run (default: the name of its '
        'work dir)')
    parser.add_argument(
        '--dpi', type=int, default=80, help='resolution of the PNGs')
    parser.add_argument(
        '--force', action='store_true', help='replace outputs that exist')
    return parser.parse_args(argv)


def find_scalar_files(run: str) -> List[str]:
    """Return the ``scalars.json`` files of a run, oldest first.

    Args:
        run (str): A work dir, or the path of one ``scalars.json``.

    Returns:
        list[str]: The files; timestamp folders sort in time order.
    """
    if osp.isfile(run):
        return [run]
    if not osp.isdir(run):
        raise FileNotFoundError(
            f'{run} does not exist: pass the work_dir of a training run '
            '(with <timestamp>/vis_data/scalars.json) or a scalars.json file')
    files = sorted(glob.glob(osp.join(run, '*', 'vis_data', 'scalars.json')))
    if not files:
        raise FileNotFoundError(
            f'no <timestamp>/vis_data/scalars.json under {run}: pass the '
            'work_dir of an mmengine training run (LocalVisBackend writes '
            'that file) or a scalars.json file')
    return files


def head_name(key: str) -> Optional[str]:
    """Map a metric key to a head name, or None if it is not a top-1."""
    if key == TEACHER_KEY:
        return 'teacher'
    if key == ENSEMBLE_KEY:
        return 'ensemble'
    match = STUDENT_KEY.match(key)
    return f'student{match.group(1)}' if match else None


def head_order(name: str) -> Tuple[int, int]:
    """Sort heads as teacher, student1, student2, ..., ensemble."""
    if name in ('teacher', 'model'):
        return (0, 0)
    if name == 'ensemble':
        return (2, 0)
    return (1, int(name[len('student'):]))


def load_curves(run: str) -> Curves:
    """Read the validation top-1 of every head of a run, per epoch.

    Args:
        run (str): A work dir, or the path of one ``scalars.json``.

    Returns:
        dict: ``{head: {epoch: top-1 in %}}``, heads in display order.
    """
    curves: Curves = {}
    seen_keys = set()
    for path in find_scalar_files(run):
        with open(path, encoding='utf-8') as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(
                        f'{path}:{lineno} is not a JSON line ({e}); '
                        'scalars.json holds one JSON object per line') from e
                seen_keys.update(record)
                # Training records carry 'iter'; validation ones do not.
                if 'iter' in record or 'step' not in record:
                    continue
                epoch = int(record['step'])
                for key, value in record.items():
                    name = head_name(key)
                    if name is not None:
                        curves.setdefault(name, {})[epoch] = float(value)
    if 'teacher' not in curves:
        found = sorted(k for k in seen_keys if k.startswith('accuracy'))
        raise ValueError(
            f'{run} has no validation {TEACHER_KEY!r} per epoch (accuracy '
            f'keys found: {found or "none"}); the run must validate with '
            'Accuracy or MultiBranchAccuracy')
    if len(curves) == 1:
        # A plain model has no students: its top-1 is not a teacher's.
        curves = {'model': curves['teacher']}
    return {k: curves[k] for k in sorted(curves, key=head_order)}


def summarize(curves: Curves) -> List[dict]:
    """Final and best top-1 of every head.

    Args:
        curves (dict): ``{head: {epoch: top-1}}`` as :func:`load_curves`
            returns.

    Returns:
        list[dict]: One row per head with ``head``, ``epochs`` (last epoch),
        ``final``, ``best`` and ``best_epoch`` (the first epoch that reached
        the best).
    """
    rows = []
    for name, points in curves.items():
        last = max(points)
        best_epoch = min(points, key=lambda e: (-points[e], e))
        rows.append(
            dict(head=name, epochs=last, final=points[last],
                 best=points[best_epoch], best_epoch=best_epoch))
    return rows


def markdown_table(summary: Dict[str, List[dict]]) -> str:
    """Format the per-run rows of :func:`summarize` as a Markdown table."""
    lines = [
        '| Run | Head | Epochs | Final top-1 (%) | Best top-1 (%) '
        '| Best epoch |', '|---|---|---:|---:|---:|---:|'
    ]
    for run, rows in summary.items():
        for r in rows:
            lines.append(f'| {run} | {r["head"]} | {r["epochs"]} | '
                         f'{r["final"]:.2f} | {r["best"]:.2f} | '
                         f'{r["best_epoch"]} |')
    return '\n'.join(lines) + '\n'


def plot_curves(all_curves: Dict[str, Curves], path: str, dpi: int) -> None:
    """Draw one panel per run, plus the teachers side by side."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    panels = list(all_curves.items())
    if len(panels) > 1:
        panels.append(('deployed model of each run', {
            run: c.get('teacher', c.get('model'))
            for run, c in all_curves.items()
        }))
    fig, axes = plt.subplots(
        1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False,
        sharey=True)
    for ax, (title, curves) in zip(axes[0], panels):
        for label, points in curves.items():
            epochs = sorted(points)
            ax.plot(epochs, [points[e] for e in epochs], marker='.',
                    linewidth=1.2 if label.startswith(('student', 'ens'))
                    else 2, label=label)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel('epoch')
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel('val top-1 (%)')
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def plot_table(summary: Dict[str, List[dict]], path: str, dpi: int) -> None:
    """Render the summary table as an image."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    header = ['Run', 'Head', 'Epochs', 'Final top-1', 'Best top-1',
              'Best epoch']
    cells = [[run, r['head'], str(r['epochs']), f'{r["final"]:.2f}',
              f'{r["best"]:.2f}', str(r['best_epoch'])]
             for run, rows in summary.items() for r in rows]
    width = 0.8 * len(header) + 0.07 * max(len(c[0]) for c in cells)
    fig, ax = plt.subplots(figsize=(width, 0.3 * (len(cells) + 1) + 0.3))
    ax.axis('off')
    table = ax.table(cellText=cells, colLabels=header, loc='center')
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    table.auto_set_column_width(list(range(len(header))))
    fig.tight_layout()
    fig.savefig(path, dpi=dpi, bbox_inches='tight')
    plt.close(fig)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    names = args.names or [
        osp.basename(osp.normpath(r)) if osp.isdir(r) else
        osp.splitext(osp.basename(r))[0] for r in args.runs
    ]
    if len(names) != len(args.runs):
        raise SystemExit(f'--names gives {len(names)} names for '
                         f'{len(args.runs)} runs: give one per run')
    if len(set(names)) != len(names):
        raise SystemExit(f'run names {names} repeat: give distinct ones '
                         'with --names')
    if args.dpi <= 0:
        raise SystemExit(f'--dpi {args.dpi} must be a positive integer, '
                         'e.g. 80')
    outputs = [osp.join(args.out_dir, f) for f in OUTPUTS]
    existing = [p for p in outputs if osp.exists(p)]
    if existing and not args.force:
        raise SystemExit(f'{existing} exist: pass --force to replace them '
                         'or choose another --out-dir')

    try:
        all_curves = {n: load_curves(r) for n, r in zip(names, args.runs)}
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(str(e))
    summary = {n: summarize(c) for n, c in all_curves.items()}

    os.makedirs(args.out_dir, exist_ok=True)
    curves_png, summary_md, summary_png = outputs
    plot_curves(all_curves, curves_png, args.dpi)
    table = markdown_table(summary)
    with open(summary_md, 'w', encoding='utf-8') as f:
        f.write(table)
    plot_table(summary, summary_png, args.dpi)
    sys.stdout.write(table)
    print('wrote ' + ', '.join(outputs))
    return 0


if __name__ == '__main__':
    sys.exit(main())
