"""Loading a checkpoint never runs code from it, in any tool or API.

A real checkpoint of a tiny training run is given a payload, an object whose
unpickling would create a marker folder; every tool that reads checkpoints
refuses it, naming the file, what it would call and the opt-in, and the
marker never appears. Damaged weights are refused by deploy too.
"""
import datetime
import os
import os.path as osp
import re
import shutil
import zipfile

import pytest
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import _load_checkpoint

from teskd_mm.apis import DeployError, deploy
from teskd_mm.utils.checkpoint import (UnsafeCheckpointError,
                                       load_checkpoint_file, read_checkpoint,
                                       saved_config, trust_checkpoint)

from conftest import (tool_in_process, train_in_process,
                      write_tiny_config)


class Payload:
    """Unpickled, it creates the folder ``marker``."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker, ))


class Lookup:
    """Unpickled, it looks up an attribute the allow-list does not name."""

    def __reduce__(self):
        return (getattr, (HistoryBuffer, '__init__'))


@pytest.fixture(scope='module')
def run(tmp_path_factory, cifar10_mini):
    """The tiny TESKD config trained one epoch: config and checkpoint."""
    tmp = tmp_path_factory.mktemp('safe')
    cfg = write_tiny_config(
        str(tmp / 'tiny.py'), cifar10_mini, extra="""
        train_cfg = dict(max_epochs=1)
        train_dataloader = dict(dataset=dict(indices=8))
        val_dataloader = dict(dataset=dict(indices=8))
        test_dataloader = val_dataloader
        """)
    work = str(tmp / 'work')
    train_in_process(cfg, work)
    return cfg, osp.join(work, 'epoch_1.pth')


def rewritten(src: str, dst: str, **meta) -> str:
    """A copy of checkpoint ``src`` with entries added to its meta."""
    ckpt = torch.load(src, map_location='cpu', weights_only=False)
    ckpt['meta'].update(meta)
    torch.save(ckpt, dst)
    return dst


@pytest.fixture
def payload(run, tmp_path):
    """A checkpoint carrying a payload, and the marker it would create."""
    marker = str(tmp_path / 'MARKER')
    path = rewritten(run[1], str(tmp_path / 'epoch_1.pth'),
                     note=Payload(marker))
    return path, marker


def refused_by_tool(capsys, tool, *args):
    with pytest.raises(SystemExit) as info:
        tool_in_process(tool, *args)
    assert info.value.code not in (0, None)
    return capsys.readouterr().err + str(info.value.code)


UNSAFE = r'epoch_1.pth is refused: loading it would call or build ' \
         r'os.makedirs.*--trust-checkpoint'


@pytest.mark.parametrize('tool,args', [
    ('train.py', ['--resume', '{ckpt}']),
    ('train.py', ['--cfg-options', 'load_from={ckpt}']),
    ('test.py', ['{ckpt}']),
    ('deploy.py', ['{ckpt}', '{out}']),
    ('analysis/tsne.py', ['{ckpt}', '--out-dir', '{out}']),
])
def test_every_tool_refuses_a_payload(run, payload, tmp_path, capsys, tool,
                                      args):
    ckpt, marker = payload
    out = str(tmp_path / 'out')
    args = [a.format(ckpt=ckpt, out=out) for a in args]
    work = ['--work-dir', str(tmp_path / 'work')] \
        if tool in ('train.py', 'test.py') else []
    err = refused_by_tool(capsys, tool, run[0], *args, *work)
    assert re.search(UNSAFE, err), err
    assert not osp.exists(marker)
    assert not osp.exists(out)


def test_mmengine_loads_go_through_the_safe_loader(payload, monkeypatch):
    ckpt, marker = payload
    # A user's process-wide switch does not reach this loader either.
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    with pytest.raises(UnsafeCheckpointError, match='os.makedirs'):
        _load_checkpoint(ckpt, map_location='cpu')
    assert not osp.exists(marker)


def test_only_history_buffer_statistics_may_be_looked_up(run, tmp_path):
    path = rewritten(run[1], str(tmp_path / 'lookup.pth'), note=Lookup())
    with pytest.raises(UnsafeCheckpointError,
                       match=r"getattr\(HistoryBuffer, '__init__'\)"):
        load_checkpoint_file(path)
    # The lookups mmengine's message hub pickles still load.
    hub = load_checkpoint_file(run[1])['message_hub']
    assert any(isinstance(v, HistoryBuffer)
               for v in hub['log_scalars'].values())


def test_our_checkpoints_load_safely_with_their_whole_content(run):
    safe = load_checkpoint_file(run[1])
    full = torch.load(run[1], map_location='cpu', weights_only=False)
    assert safe.keys() == full.keys()
    assert safe['meta'] == full['meta']
    for k, v in full['state_dict'].items():
        assert torch.equal(safe['state_dict'][k], v)
    assert saved_config(safe, run[1]).model.head.type == 'MultiBranchClsHead'


def test_a_saved_config_is_read_as_data_never_run(run, tmp_path):
    marker = str(tmp_path / 'MARKER')
    path = str(tmp_path / 'cfg.pth')
    ckpt = torch.load(run[1], map_location='cpu', weights_only=False)
    ckpt['meta']['cfg'] += f'\nx = __import__("os").makedirs({marker!r})\n'
    torch.save(ckpt, path)
    with pytest.raises(DeployError, match=r"cfg.pth is refused: the training "
                       r"config it carries .*not plain data .*__import__"):
        deploy(run[0], path, str(tmp_path / 'out'))
    assert not osp.exists(marker)


def test_trusting_a_file_is_an_explicit_opt_in(run, tmp_path):
    path = rewritten(run[1], str(tmp_path / 'dated.pth'),
                     when=datetime.date(2026, 1, 1))
    with pytest.raises(DeployError, match='dated.pth is refused: .*'
                       'datetime.date.*--trust-checkpoint'):
        deploy(run[0], path, str(tmp_path / 'out'))
    assert not osp.exists(tmp_path / 'out')
    with pytest.raises(UnsafeCheckpointError):
        read_checkpoint(path)
    trust_checkpoint(path)
    assert read_checkpoint(path)['meta']['when'] == datetime.date(2026, 1, 1)
    cfg_out, ckpt_out = deploy(run[0], path, str(tmp_path / 'out'))
    # The deployed file holds tensors and plain data only.
    torch.load(ckpt_out, weights_only=True)


def test_a_trusted_file_loads_through_the_tool_flag(run, tmp_path, capsys):
    path = rewritten(run[1], str(tmp_path / 'dated2.pth'),
                     when=datetime.date(2026, 1, 1))
    out = str(tmp_path / 'out')
    err = refused_by_tool(capsys, 'deploy.py', run[0], path, out)
    assert 'datetime.date' in err and not osp.exists(out)
    with pytest.raises(SystemExit) as info:
        tool_in_process('deploy.py', run[0], path, out, '--trust-checkpoint')
    assert info.value.code == 0
    assert sorted(os.listdir(tmp_path / 'out')) == [
        'tiny_deploy.py', 'tiny_teacher.pth'
    ]


def _flip_inside_a_tensor(src: str, dst: str) -> None:
    """Copy ``src`` with bytes in the middle of its largest tensor changed
    (the zip's CRCs no longer match; its structure is intact)."""
    shutil.copy(src, dst)
    with zipfile.ZipFile(dst) as zf:
        info = max((i for i in zf.infolist() if '/data/' in i.filename),
                   key=lambda i: i.file_size)
    with open(dst, 'r+b') as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = (int.from_bytes(f.read(2), 'little')
                               for _ in range(2))
        start = info.header_offset + 30 + name_len + extra_len
        f.seek(start + info.file_size // 2)
        f.write(b'\x7e' * 16)


def test_deploy_refuses_damaged_weights(run, tmp_path, capsys):
    bad = str(tmp_path / 'flipped.pth')
    _flip_inside_a_tensor(run[1], bad)
    err = refused_by_tool(capsys, 'deploy.py', run[0], bad,
                          str(tmp_path / 'out'))
    assert 'flipped.pth is corrupt (its member' in err
    assert 'fails its CRC check' in err
    assert not osp.exists(tmp_path / 'out')


def test_deploy_refuses_non_finite_logits(run, tmp_path):
    ckpt = torch.load(run[1], map_location='cpu', weights_only=False)
    ckpt['state_dict']['head.fc.weight'][0, 0] = float('nan')
    path = str(tmp_path / 'nan.pth')
    torch.save(ckpt, path)
    with pytest.raises(DeployError, match='non-finite logits'):
        deploy(run[0], path, str(tmp_path / 'out'))
    assert not osp.exists(tmp_path / 'out')


def test_the_payload_is_real(payload):
    # Loaded in full, the payload acts: the refusals above are not vacuous.
    ckpt, marker = payload
    torch.load(ckpt, map_location='cpu', weights_only=False)
    assert osp.isdir(marker)
