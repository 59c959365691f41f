"""tools/analysis/plot_curves.py on scalars.json files written here."""
import importlib.util
import json
import os
import os.path as osp

import pytest
from conftest import ROOT, run_tool

TOOL = 'tools/analysis/plot_curves.py'


def load_tool():
    """Import the tool's module (tools/ is not a package) to call main()."""
    spec = importlib.util.spec_from_file_location('plot_curves',
                                                  osp.join(ROOT, TOOL))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_scalars(work_dir: str, timestamp: str, epochs: dict,
                  iters_per_epoch: int = 2) -> None:
    """Write a scalars.json the way mmengine's LoggerHook lays it out.

    ``epochs`` maps an epoch to its validation metrics; a training record
    (with 'iter') precedes each epoch's validation record.
    """
    path = osp.join(work_dir, timestamp, 'vis_data', 'scalars.json')
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        for epoch, metrics in epochs.items():
            # Training records: 'accuracy/top1' here is a training metric and
            # must not be read as a validation point.
            f.write(json.dumps(dict(
                lr=0.1, loss=2.0, epoch=epoch, iter=epoch * iters_per_epoch,
                step=epoch * iters_per_epoch,
                **{'accuracy/top1': 99.0})) + '\n')
            f.write(json.dumps(dict(data_time=0.01, time=0.2, step=epoch,
                                    **metrics)) + '\n')


def teskd_metrics(teacher, s1, s2, s3, ens):
    return {
        'accuracy/top1': teacher,
        'accuracy/top5': 99.0,
        'accuracy/student1_top1': s1,
        'accuracy/student2_top1': s2,
        'accuracy/student3_top1': s3,
        'accuracy/ensemble_top1': ens,
    }


@pytest.fixture
def two_runs(tmp_path):
    teskd = str(tmp_path / 'teskd_run')
    # A run continued with --resume: epoch 2 was evaluated again after the
    # restart, and the later value must win.
    write_scalars(teskd, '20260101_000000', {
        1: teskd_metrics(30.0, 20.0, 25.0, 28.0, 31.0),
        2: teskd_metrics(10.0, 11.0, 12.0, 13.0, 14.0),
    })
    write_scalars(teskd, '20260102_000000', {
        2: teskd_metrics(45.5, 30.0, 35.0, 40.0, 46.0),
        3: teskd_metrics(41.25, 33.0, 38.0, 42.0, 44.0),
    })
    base = str(tmp_path / 'baseline_run')
    write_scalars(base, '20260101_000000', {
        1: {'accuracy/top1': 28.0, 'accuracy/top5': 80.0},
        2: {'accuracy/top1': 39.0, 'accuracy/top5': 85.0},
        3: {'accuracy/top1': 40.5, 'accuracy/top5': 86.0},
    })
    return teskd, base


def read_rows(md_path):
    rows = {}
    with open(md_path) as f:
        lines = f.read().strip().splitlines()
    assert lines[0].startswith('| Run | Head |')
    for line in lines[2:]:
        run, head, epochs, final, best, best_epoch = [
            c.strip() for c in line.strip('|').split('|')
        ]
        rows[(run, head)] = (int(epochs), float(final), float(best),
                             int(best_epoch))
    return rows


def test_table_and_pngs(two_runs, tmp_path):
    out = str(tmp_path / 'out')
    proc = run_tool(TOOL, *two_runs, '--out-dir', out, '--names', 'TESKD',
                    'Baseline', env={'OMP_NUM_THREADS': '1'})
    rows = read_rows(osp.join(out, 'summary.md'))
    assert rows == {
        ('TESKD', 'teacher'): (3, 41.25, 45.5, 2),
        ('TESKD', 'student1'): (3, 33.0, 33.0, 3),
        ('TESKD', 'student2'): (3, 38.0, 38.0, 3),
        ('TESKD', 'student3'): (3, 42.0, 42.0, 3),
        ('TESKD', 'ensemble'): (3, 44.0, 46.0, 2),
        ('Baseline', 'model'): (3, 40.5, 40.5, 3),
    }
    # Heads in display order, runs in the order given.
    heads = [k for k in rows]
    assert heads[0] == ('TESKD', 'teacher')
    assert heads[4] == ('TESKD', 'ensemble')
    assert '| TESKD | teacher | 3 | 41.25 | 45.50 | 2 |' in proc.stdout
    for name in ('curves.png', 'summary.png'):
        path = osp.join(out, name)
        with open(path, 'rb') as f:
            assert f.read(8) == b'\x89PNG\r\n\x1a\n'
        assert osp.getsize(path) > 2000


def test_curve_image_size_follows_dpi(two_runs, tmp_path):
    from PIL import Image
    sizes = {}
    for dpi in (40, 80):
        out = str(tmp_path / f'dpi{dpi}')
        assert load_tool().main([*two_runs, '--out-dir', out, '--dpi',
                                 str(dpi)]) == 0
        with Image.open(osp.join(out, 'curves.png')) as im:
            sizes[dpi] = im.size
    # Two runs and the teachers' panel: three panels of 4.2 x 3.4 inches.
    assert sizes[80] == (round(3 * 4.2 * 80), round(3.4 * 80))
    assert sizes[40] == (round(3 * 4.2 * 40), round(3.4 * 40))


def test_bad_inputs_are_named(two_runs, tmp_path):
    teskd, base = two_runs
    out = str(tmp_path / 'out')
    main = load_tool().main

    with pytest.raises(SystemExit, match='nowhere does not exist'):
        main([str(tmp_path / 'nowhere'), '--out-dir', out])

    empty = tmp_path / 'empty_run'
    empty.mkdir()
    with pytest.raises(SystemExit,
                       match='no <timestamp>/vis_data/scalars.json under'):
        main([str(empty), '--out-dir', out])

    no_acc = str(tmp_path / 'no_acc')
    write_scalars(no_acc, '20260101_000000', {1: {'loss_val': 1.0}})
    with pytest.raises(SystemExit,
                       match="has no validation 'accuracy/top1' per epoch"):
        main([no_acc, '--out-dir', out])

    broken = str(tmp_path / 'broken' / 'scalars.json')
    os.makedirs(osp.dirname(broken))
    with open(broken, 'w') as f:
        f.write('{"step": 1, "accuracy/top1": 3\n')
    with pytest.raises(SystemExit, match='scalars.json:1 is not a JSON line'):
        main([broken, '--out-dir', out])

    with pytest.raises(SystemExit, match='--names gives 1 names for 2 runs'):
        main([teskd, base, '--out-dir', out, '--names', 'a'])
    with pytest.raises(SystemExit,
                       match='repeat: give distinct ones with --names'):
        main([teskd, teskd, '--out-dir', out])
    with pytest.raises(SystemExit, match='--dpi 0 must be a positive'):
        main([teskd, '--out-dir', out, '--dpi', '0'])
    assert not osp.exists(out)

    # Outputs that exist are kept unless --force is given.
    assert main([teskd, '--out-dir', out]) == 0
    with open(osp.join(out, 'summary.md'), 'w') as f:
        f.write('my notes\n')
    with pytest.raises(SystemExit, match='pass --force to replace them'):
        main([base, '--out-dir', out])
    with open(osp.join(out, 'summary.md')) as f:
        assert f.read() == 'my notes\n'
    assert main([base, '--out-dir', out, '--force']) == 0
    assert ('baseline_run', 'model') in read_rows(
        osp.join(out, 'summary.md'))
