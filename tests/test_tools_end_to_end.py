"""train -> test -> resume -> deploy -> stock mmpretrain, with real processes."""
import json
import os
import os.path as osp
import re
import subprocess
import sys
import textwrap

import pytest
import torch

from conftest import run_tool, write_full_config


def write_config(path, data_root):
    """A small run of the shipped TESKD recipe: 16 images, 2 steps."""
    return write_full_config(
        path, data_root, extra="""
        train_dataloader = dict(dataset=dict(indices=16))
        val_dataloader = dict(dataset=dict(indices=16))
        test_dataloader = val_dataloader
        """)


STOCK_CHECK = textwrap.dedent("""
    import json, sys
    import torch
    import mmpretrain
    model = mmpretrain.get_model(sys.argv[1], pretrained=sys.argv[2])
    model.eval()
    x = torch.load(sys.argv[3])
    with torch.no_grad():
        logits = model(x, mode='tensor')
    assert 'teskd_mm' not in sys.modules, 'the stock model imported teskd_mm'
    json.dump(dict(
        params=sum(p.numel() for p in model.parameters()),
        head=type(model.head).__name__, neck=type(model.neck).__name__,
        logits=logits.tolist()), open(sys.argv[4], 'w'))
    """)


@pytest.fixture(scope='module')
def trained(tmp_path_factory, cifar10_mini):
    tmp = tmp_path_factory.mktemp('e2e')
    cfg = write_config(str(tmp / 'teskd_mini.py'), cifar10_mini)
    work = str(tmp / 'work')
    proc = run_tool('tools/train.py', cfg, '--work-dir', work)
    QUIET['train.py'] = proc.stdout + proc.stderr
    return cfg, work, tmp


# What each tool printed, for test_no_library_warnings.
QUIET = {}
WARNING = re.compile(r'Warning|WARNING|warnings\.warn')


def test_no_library_warnings(trained):
    """The known library warnings are filtered (teskd_mm/known_warnings.py)
    and the package's own avoidable ones fixed: a run and a test print
    none."""
    cfg, work, tmp = trained
    proc = run_tool('tools/test.py', cfg, osp.join(work, 'epoch_1.pth'),
                    '--work-dir', str(tmp / 'quiet_test'))
    QUIET['test.py'] = proc.stdout + proc.stderr
    for tool, text in QUIET.items():
        found = [line for line in text.splitlines() if WARNING.search(line)]
        assert not found, (tool, found[:5])


def test_train_writes_checkpoint_and_multi_branch_scalars(trained):
    cfg, work, _ = trained
    assert osp.isfile(osp.join(work, 'epoch_1.pth'))
    assert any(f.startswith('best_accuracy_top1') for f in os.listdir(work))
    scalars = [
        osp.join(r, f) for r, _, fs in os.walk(work) for f in fs
        if f == 'scalars.json'
    ]
    assert scalars
    records = [json.loads(line) for line in open(scalars[0])]
    val = [r for r in records if 'accuracy/top1' in r]
    train = [r for r in records if 'loss_kd_student1' in r]
    assert val and train
    for key in ('student1_top1', 'student2_top1', 'student3_top1',
                'ensemble_top1'):
        assert f'accuracy/{key}' in val[-1]


def test_test_tool_reports_teacher_students_and_ensemble(trained):
    cfg, work, tmp = trained
    out = str(tmp / 'metrics.json')
    run_tool('tools/test.py', cfg, osp.join(work, 'epoch_1.pth'),
             '--work-dir', str(tmp / 'test_work'), '--out', out)
    metrics = json.load(open(out))
    for key in ('top1', 'student1_top1', 'student3_top1', 'ensemble_top1'):
        assert 0 <= metrics[f'accuracy/{key}'] <= 100


def test_resume_continues_from_checkpoint(trained):
    cfg, work, _ = trained
    proc = run_tool('tools/train.py', cfg, '--work-dir', work, '--resume',
                    '--cfg-options', 'train_cfg.max_epochs=2')
    log = proc.stdout + proc.stderr
    assert 'resumed epoch: 1, iter: 2' in log
    assert osp.isfile(osp.join(work, 'epoch_2.pth'))
    ckpt = torch.load(osp.join(work, 'epoch_2.pth'), weights_only=False)
    assert ckpt['meta']['epoch'] == 2 and ckpt['meta']['iter'] == 4


def test_deploy_gives_a_stock_model_with_the_teachers_logits(trained):
    cfg, work, tmp = trained
    ckpt = osp.join(work, 'epoch_1.pth')
    out_dir = str(tmp / 'deployed')
    run_tool('tools/deploy.py', cfg, ckpt, out_dir)
    dep_cfg = osp.join(out_dir, 'teskd_mini_deploy.py')
    dep_ckpt = osp.join(out_dir, 'teskd_mini_teacher.pth')
    assert osp.isfile(dep_cfg) and osp.isfile(dep_ckpt)
    text = open(dep_cfg).read()
    assert 'teskd_mm' not in text and 'MFMNeck' not in text

    # The TESKD model's teacher logits, computed here.
    from mmengine.config import Config
    from mmpretrain.registry import MODELS
    model = MODELS.build(Config.fromfile(cfg).model)
    model.load_state_dict(
        torch.load(ckpt, weights_only=False)['state_dict'])
    model.eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        expected = model(x, mode='tensor')
    torch.save(x, str(tmp / 'x.pt'))

    # A fresh process that never imports teskd_mm (and sets no env flags).
    env = {
        k: v
        for k, v in os.environ.items()
        if k != 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'
    }
    result = str(tmp / 'stock.json')
    proc = subprocess.run([
        sys.executable, '-c', STOCK_CHECK, dep_cfg, dep_ckpt,
        str(tmp / 'x.pt'), result
    ],
                          cwd=str(tmp),
                          env=env,
                          capture_output=True,
                          text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stock = json.load(open(result))
    assert stock['head'] == 'LinearClsHead'
    assert stock['neck'] == 'GlobalAveragePooling'
    # ResNet_CIFAR-18 (11,168,832) + Linear(512, 10).
    assert stock['params'] == 11_168_832 + 5_130
    assert torch.allclose(torch.tensor(stock['logits']), expected, atol=1e-5)

    # Deploying again into the same place refuses to overwrite.
    proc = run_tool('tools/deploy.py', cfg, ckpt, out_dir, check=False)
    assert proc.returncode == 2
    assert 'already exist' in proc.stderr and '--overwrite' in proc.stderr
