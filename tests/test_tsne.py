"""tools/analysis/tsne.py on tiny TESKD, DTSKD and deployed checkpoints
trained here, and on the inputs it must refuse."""
import importlib.util
import os.path as osp
import re

import numpy as np
import pytest
from PIL import Image

from teskd_mm.apis import deploy

from conftest import (CIFAR10_CLASSES, ROOT, run_tool, tool_in_process,
                      train_in_process, write_tiny_config)

TOOL = 'tools/analysis/tsne.py'
DTSKD = """
model = dict(
    neck=dict(type='DTSKDNeck'),
    head=dict(type='DTSKDHead', loss=dict(_delete_=True, type='DTSKDLoss')))
"""
STUDENTS = ['teacher', 'student1', 'student2', 'student3']
# tab10, the colours of the first ten classes.
TAB10 = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b',
         '#e377c2', '#7f7f7f', '#bcbd22', '#17becf']


def load_tool():
    """Import the tool's module (tools/ is not a package) to call main()."""
    spec = importlib.util.spec_from_file_location('tsne_tool',
                                                  osp.join(ROOT, TOOL))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_in_process(*args: str) -> int:
    """Run the tool's command line in this process; its exit code."""
    with pytest.raises(SystemExit) as exc:
        tool_in_process('analysis/tsne.py', *args)
    return exc.value.code


@pytest.fixture(scope='module')
def runs(cifar10_mini, tmp_path_factory) -> dict:
    """(config, checkpoint) of one epoch of tiny TESKD and DTSKD training,
    and of the TESKD teacher deployed as a stock model."""
    tmp = tmp_path_factory.mktemp('tsne')
    found = {}
    for name, extra in (('teskd', ''), ('dtskd', DTSKD)):
        cfg = write_tiny_config(str(tmp / f'{name}.py'), cifar10_mini, extra)
        work = str(tmp / f'{name}_work')
        train_in_process(cfg, work, **{'train_cfg.max_epochs': 1,
                                       'val_cfg': None,
                                       'val_dataloader': None,
                                       'val_evaluator': None})
        # The config as trained, dumped by the Runner.
        found[name] = (osp.join(work, f'{name}.py'),
                       osp.join(work, 'epoch_1.pth'))
    deploy(*found['teskd'], str(tmp / 'deployed'))
    found['deployed'] = (str(tmp / 'deployed' / 'teskd_deploy.py'),
                         str(tmp / 'deployed' / 'teskd_teacher.pth'))
    return found


def check_png(stdout: str, path: str, panels: list, classes: int) -> None:
    """The printed lines, and a PNG of that size with a panel per head,
    each showing points of every class."""
    lines = stdout.strip().splitlines()
    assert lines[-1] == path
    assert f'panels: {", ".join(panels)}' in lines
    width, height = map(int, re.search(r'figure: (\d+)x(\d+) px',
                                       stdout).groups())
    with open(path, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    with Image.open(path) as img:
        assert img.format == 'PNG' and img.size == (width, height)
        pixels = np.asarray(img.convert('RGB'))
    tool = load_tool()
    panel = int(tool.PANEL_INCHES * tool.DPI)
    assert width == panel * len(panels)
    for k in range(len(panels)):
        column = pixels[:, k * panel:(k + 1) * panel]
        # Inside the axes (above the bottom spine, the lowest dark row, so
        # not the legend), each class's colour.
        dark = ((column < 100).all(-1).mean(1) > 0.5).nonzero()[0]
        region = column[:dark[-1]]
        for colour in TAB10[:classes]:
            rgb = [int(colour[i:i + 2], 16) for i in (1, 3, 5)]
            assert (region == rgb).all(-1).any(), (panels[k], colour)


@pytest.mark.parametrize('name,panels', [('teskd', STUDENTS),
                                         ('dtskd', STUDENTS),
                                         ('deployed', ['teacher'])])
def test_one_panel_per_head(runs, name, panels, tmp_path, capsys):
    config, ckpt = runs[name]
    args = (config, ckpt, '--out-dir', str(tmp_path), '--num-samples', '40',
            '--perplexity', '5')
    if name == 'teskd':
        # Once as a command, as users run it.
        stdout = run_tool(TOOL, *args).stdout
    else:
        assert run_in_process(*args) == 0
        stdout = capsys.readouterr().out
    png = tmp_path / f'tsne_{osp.splitext(osp.basename(ckpt))[0]}.png'
    check_png(stdout, str(png), panels, classes=10)


def test_chosen_classes_by_name(runs, tmp_path, capsys):
    config, ckpt = runs['deployed']
    assert run_in_process(config, ckpt, '--out-dir', str(tmp_path),
                          '--classes', 'airplane,automobile,bird',
                          '--perplexity', '5', '--split', 'train') == 0
    # Three classes: tab10's first three colours in the panel.
    check_png(capsys.readouterr().out,
              str(tmp_path / 'tsne_teskd_teacher.png'), ['teacher'], 3)


# case: (arguments after CONFIG CKPT --out-dir DIR, the error's pattern).
REFUSED = {
    'missing_checkpoint': ([], r'checkpoint \S+no\.pth does not exist'),
    'other_model': ([], r'does not belong to this config: \d+ of the '
                    r"model's weights are missing, e\.g\. \['neck\."),
    'other_shape': (['--cfg-options', 'model.head.num_classes=5'],
                    r'head\.fc\.weight is \(10, 64\) in the checkpoint and '
                    r'\(5, 64\) in the config'),
    'unknown_class': (['--classes', 'cat,zebra'],
                      'unknown class zebra; the known ones are ' +
                      ', '.join(CIFAR10_CLASSES)),
    'missing_split': (['--split', 'val', '--cfg-options',
                       'val_dataloader=None'],
                      'the config has no val_dataloader; choose --split '
                      'among test, train'),
    'perplexity': (['--num-samples', '40', '--perplexity', '40'],
                   r'--perplexity 40 must be below the number of samples '
                   r'\(40\)'),
}


@pytest.mark.parametrize('case', list(REFUSED))
def test_refused_with_one_line(runs, tmp_path, capsys, case):
    config, ckpt = runs['teskd']
    extra, expected = REFUSED[case]
    if case == 'missing_checkpoint':
        ckpt = str(tmp_path / 'no.pth')
    elif case == 'other_model':
        ckpt = runs['deployed'][1]
    out_dir = tmp_path / 'out'
    assert run_in_process(config, ckpt, '--out-dir', str(out_dir),
                          *extra) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith('tsne: error: ')
    assert re.search(expected, err), err
    assert not out_dir.exists()


def test_an_earlier_map_is_never_replaced_silently(runs, tmp_path, capsys):
    """Two runs' epoch_1.pth into one --out-dir: the second is refused
    before any work, unless --overwrite."""
    config, ckpt = runs['deployed']
    args = [config, ckpt, '--out-dir', str(tmp_path), '--perplexity', '5',
            '--num-samples', '20']
    assert run_in_process(*args) == 0
    png = tmp_path / 'tsne_teskd_teacher.png'
    before = png.read_bytes()
    capsys.readouterr()
    config, other = runs['teskd']
    copy = tmp_path / 'elsewhere' / 'teskd_teacher.pth'
    copy.parent.mkdir()
    copy.write_bytes(open(other, 'rb').read())
    assert run_in_process(runs['teskd'][0], str(copy), *args[2:]) == 2
    err = capsys.readouterr().err
    assert f'{png} exists (a map of a checkpoint named teskd_teacher.pth); ' \
        'choose another --out-dir, or pass --overwrite to replace it' in err
    assert png.read_bytes() == before
    assert run_in_process(runs['teskd'][0], str(copy), *args[2:],
                          '--overwrite') == 0
    assert png.read_bytes() != before


def test_an_out_dir_that_cannot_be_made(runs, tmp_path, capsys):
    a_file = tmp_path / 'a_file'
    a_file.write_text('')
    config, ckpt = runs['teskd']
    assert run_in_process(config, ckpt, '--out-dir',
                          str(a_file / 'maps')) == 2
    assert f'--out-dir {a_file}/maps cannot be made: {a_file} is a file, ' \
        'not a folder; choose another' in capsys.readouterr().err


def test_missing_scikit_learn_is_named(tmp_path):
    fake = tmp_path / 'sklearn'
    fake.mkdir()
    (fake / '__init__.py').write_text('raise ImportError("not here")\n')
    # Named before anything else is read: the files need not exist.
    proc = run_tool(TOOL, 'no_config.py', 'no.pth', '--out-dir',
                    str(tmp_path / 'out'), env={'PYTHONPATH': str(tmp_path)},
                    check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        'tsne: error: scikit-learn is not installed; pip install '
        'scikit-learn')
    assert not (tmp_path / 'out').exists()
