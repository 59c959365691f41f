"""Every command of README.md's quick start and own-config sections, as
written, in a fresh copy of the repository.

The test sets the variables the README documents (the data root) instead
of running its ``export`` lines, and shortens each training run by
appending to its ``--cfg-options``: 4 images, one batch, validation and a
checkpoint at the last epoch only. Nothing else of a command changes, so the
README cannot drift from the tools.
"""
import os
import os.path as osp
import re
import shutil
import subprocess
import sys

from conftest import ROOT

SECTIONS = ('## Quick start on an image folder', '## TESKD in your own config')
SHORTER = ('train_dataloader.dataset.indices=4 '
           'val_dataloader.dataset.indices=4 '
           'train_dataloader.batch_size=4 val_dataloader.batch_size=4 '
           'train_dataloader.num_workers=0 val_dataloader.num_workers=0 '
           'train_cfg.val_interval=30 default_hooks.checkpoint.interval=30')


def readme_blocks():
    """(language, code) of every fenced block of the sections, in order."""
    text = open(osp.join(ROOT, 'README.md')).read()
    blocks = []
    for title in SECTIONS:
        start = text.index(title)
        end = text.find('\n## ', start + len(title))
        section = text[start:end if end > 0 else None]
        blocks += re.findall(r'```(\w+)\n(.*?)```', section, re.S)
    return blocks


def fresh_copy(dst: str) -> str:
    """The repository's tracked files (the whole tree where git is
    missing), without build outputs."""
    try:
        files = subprocess.run(['git', 'ls-files'], cwd=ROOT, check=True,
                               capture_output=True, text=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        files = None
    if not files:
        shutil.copytree(ROOT, dst, ignore=shutil.ignore_patterns(
            '.git', '.venv', '.ci-venv', 'work_dirs', '__pycache__'))
        return dst
    for name in files:
        if osp.isfile(osp.join(ROOT, name)):
            os.makedirs(osp.dirname(osp.join(dst, name)), exist_ok=True)
            shutil.copy2(osp.join(ROOT, name), osp.join(dst, name))
    return dst


def shortened(line: str) -> str:
    if not line.startswith('python tools/train.py'):
        return line
    if '--cfg-options' in line:
        return f'{line} {SHORTER}'
    return f'{line} --cfg-options {SHORTER}'


def test_readme_commands_run_as_written(tmp_path, cifar10_mini):
    blocks = readme_blocks()
    assert [lang for lang, _ in blocks] == ['bash', 'python', 'bash']
    repo = fresh_copy(str(tmp_path / 'repo'))
    env = dict(os.environ, CIFAR10JPG_ROOT=cifar10_mini,
               OMP_NUM_THREADS='2',
               PATH=osp.dirname(sys.executable) + os.pathsep +
               os.environ.get('PATH', ''))
    ran = []
    for lang, code in blocks:
        if lang == 'python':
            commands = [[sys.executable, '-c', code]]
        else:
            lines = [line.strip() for line in code.splitlines()]
            documented = [line for line in lines
                          if line.startswith('export ')]
            # The variables the README documents are set by the test.
            assert all(line.split('=')[0][len('export '):] in env
                       for line in documented), documented
            commands = [['bash', '-c', shortened(line)] for line in lines
                        if line and not line.startswith(('#', 'export '))]
        for command in commands:
            proc = subprocess.run(command, cwd=repo, env=env, text=True,
                                  capture_output=True, timeout=600)
            assert proc.returncode == 0, (command, proc.stderr[-3000:])
            ran.append((command, proc.stdout))
    # Both trainings of the quick start, each in its own work dir.
    assert osp.isfile(osp.join(repo, 'work_dirs', 'teskd',
                               'resnet18_cifar10jpg', 'epoch_30.pth'))
    assert osp.isfile(osp.join(repo, 'work_dirs', 'baseline',
                               'resnet18_cifar10jpg', 'epoch_30.pth'))
    # The inferencer named a class of the data set.
    inference = next(out for command, out in ran
                     if command[0] == sys.executable)
    printed = re.findall(r'predicted: (\w+) ([\d.]+)$', inference, re.M)
    assert len(printed) == 1, inference[-2000:]
    assert printed[0][0] in os.listdir(osp.join(cifar10_mini, 'train'))
    assert osp.isfile(osp.join(repo, 'my_configs',
                               'teskd_resnet18_cifar10jpg.py'))
