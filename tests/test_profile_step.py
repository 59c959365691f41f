"""tools/analysis/profile_step.py: parts, their time and their arithmetic."""
import json

import pytest

from conftest import ROOT, tool_in_process

TESKD = f'{ROOT}/configs/teskd/resnet18_cifar100.py'
# Multiply-accumulates per 32x32 image of the released network (conv and
# Linear layers): the whole training network and the teacher alone.
WHOLE_MACS, TEACHER_MACS = 2040.4e6, 555.5e6
# The teacher's fc: 512 x 100.
FC_MACS = 512 * 100
# fast=True runs each upsample's 1x1 conv (512 x 512) before the x2
# interpolation, on a quarter of the pixels: on 4x4, 8x8 and 16x16 maps
# instead of 8x8, 16x16 and 32x32.
UPSAMPLE_SAVED = 512 * 512 * (8 * 8 + 16 * 16 + 32 * 32) * 3 / 4


def folded_statistics_macs(batch: int) -> float:
    """Per image: the laterals from 64 channels at 32x32 and 128 at 16x16
    take BN's statistics from their input's covariance (pixels x C_in^2)
    and ``W cov`` (512 x C_in^2) when fast."""
    return sum(batch * size * size * c * c + 512 * c * c
               for c, size in ((64, 32), (128, 16))) / batch


def profile(tmp_path, name, *options):
    out = tmp_path / f'{name}.json'
    with pytest.raises(SystemExit) as done:
        tool_in_process('analysis/profile_step.py', TESKD, '--batch-size',
                        '2', '--warmup', '0', '--out', str(out), *options)
    assert done.value.code == 0
    return json.loads(out.read_text())['parts']


@pytest.mark.parametrize('fast', [True, False])
def test_parts_and_their_arithmetic(tmp_path, fast):
    parts = profile(tmp_path, f'fast{fast}', '--cfg-options',
                    f'model.neck.fast={fast}', f'model.head.fast={fast}')
    # Every level of the neck, every student and the loss are parts.
    for name in ('backbone', 'neck', 'neck.lateral_top', 'neck.laterals.1',
                 'neck.upsamples.1', 'neck.upsamples.3', 'head.branches.1',
                 'head.branches.3', 'head.fc', 'head.loss_module'):
        assert name in parts, name
    for name in ('backbone', 'neck.upsamples.1', 'head.branches.1'):
        assert parts[name]['forward_us'] > 0
        assert parts[name]['backward_us'] > 0
    per_image = {k: v['macs'] / 2 for k, v in parts.items()}
    assert per_image['backbone'] == pytest.approx(
        TEACHER_MACS - FC_MACS, rel=2e-4)
    assert per_image['head.fc'] == FC_MACS
    whole = WHOLE_MACS - (
        UPSAMPLE_SAVED - folded_statistics_macs(2) if fast else 0)
    assert sum(per_image.values()) == pytest.approx(whole, rel=2e-4)
    # The fuses run inside the neck's own forward when fast (their convs
    # on the two halves), inside the fuse modules when plain.
    fuse = 512 * 1024 * (8 * 8 + 16 * 16 + 32 * 32)
    own = per_image['neck'] + sum(
        v for k, v in per_image.items() if k.startswith('neck.fuses'))
    assert own == fuse


def test_missing_config_is_explained(capsys):
    with pytest.raises(SystemExit, match='config nowhere.py does not exist'):
        tool_in_process('analysis/profile_step.py', 'nowhere.py')


@pytest.mark.parametrize('argv,message', [
    (['--batch-size', '0'], '--batch-size must be at least 1, got 0'),
    (['--steps', '0'], '--steps must be at least 1, got 0'),
    (['--warmup', '-1'], '--warmup must be at least 0, got -1'),
])
def test_bad_numbers_are_explained(argv, message, capsys):
    with pytest.raises(SystemExit):
        tool_in_process('analysis/profile_step.py', TESKD, *argv)
    assert message in capsys.readouterr().err


def test_existing_table_is_not_overwritten(tmp_path, capsys):
    out = tmp_path / 'table.json'
    out.write_text('{}')
    with pytest.raises(SystemExit):
        tool_in_process('analysis/profile_step.py', TESKD, '--out', str(out))
    assert f'--out {out} already exists; name a new file (results are ' \
        'never written over)' in capsys.readouterr().err
    assert out.read_text() == '{}'
