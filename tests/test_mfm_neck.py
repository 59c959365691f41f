"""MFMNeck: structure, sizes, fusion modes, student subsets, clear errors."""
import pytest
import torch

from mmpretrain.registry import MODELS

from teskd_mm.models.necks import MFMNeck, MFMOutput

from conftest import n_params

RESNET18_CHANNELS = (64, 128, 256, 512)


def stages(n=2, channels=RESNET18_CHANNELS, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(
        torch.randn(n, c, size // 2**i, size // 2**i, generator=g)
        for i, c in enumerate(channels))


def test_registered_and_reference_sizes():
    neck = MODELS.build(dict(type='MFMNeck', in_channels=RESNET18_CHANNELS))
    assert isinstance(neck, MFMNeck)
    # The released network: laterals 495,616; upsample convs 789,504; fuses 525,312.
    laterals = n_params(neck.lateral_top) + n_params(neck.laterals)
    assert laterals == 495_616
    assert n_params(neck.upsamples) == 789_504
    assert all(n_params(f) == 525_312 for f in neck.fuses.values())


def test_output_structure_and_shapes():
    neck = MFMNeck(RESNET18_CHANNELS)
    x = stages()
    out = neck(x)
    assert isinstance(out, MFMOutput)
    assert out.teacher is x[-1]
    assert out.student_ids == (1, 2, 3)
    assert [tuple(s.shape) for s in out.students] == [(2, 512, 32, 32),
                                                      (2, 512, 16, 16),
                                                      (2, 512, 8, 8)]


def test_plain_and_fast_agree_in_eval_mode():
    """The running statistics path; training mode, gradients and every
    fusion are compared in test_equivalence.py."""
    torch.manual_seed(0)
    fast = MFMNeck(RESNET18_CHANNELS, out_channels=32).eval()
    plain = MFMNeck(RESNET18_CHANNELS, out_channels=32, fast=False).eval()
    plain.load_state_dict(fast.state_dict())
    x = stages(channels=RESNET18_CHANNELS, size=16)
    with torch.no_grad():
        for a, b in zip(fast(x).students, plain(x).students):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('fusion', ['mixed', 'add', 'concat', 'none'])
@pytest.mark.parametrize('students', [(1, 2, 3), (2, 3), (3, )])
def test_every_fusion_and_student_subset_runs(fusion, students):
    neck = MFMNeck((8, 16, 32, 64), fusion=fusion, students=students)
    out = neck(stages(channels=(8, 16, 32, 64), size=16))
    assert out.student_ids == students
    for b, s in zip(students, out.students):
        assert s.shape == (2, 64, 16 // 2**(b - 1), 16 // 2**(b - 1))
    # Only what the active students need is built: every parameter is used.
    sum(s.sum() for s in out.students).backward()
    unused = [n for n, p in neck.named_parameters() if p.grad is None]
    assert not unused
    assert len(neck.upsamples) == 4 - students[0]
    assert len(neck.laterals) == (0 if fusion == 'none' else 4 - students[0])
    assert len(neck.fuses) == (4 - students[0]
                               if fusion in ('mixed', 'concat') else 0)


def test_concat_halves_channels_and_add_has_no_fuse():
    concat = MFMNeck((8, 16, 32, 64), fusion='concat')
    assert concat.fuses['1'].conv.in_channels == 128
    assert concat.fuses['1'].conv.out_channels == 64
    assert len(MFMNeck((8, 16, 32, 64), fusion='add').fuses) == 0


def test_unknown_fusion_is_refused():
    with pytest.raises(ValueError, match=r"Unknown MFMNeck fusion 'sum'.*"
                       r"'mixed', 'add', 'concat', 'none'"):
        MFMNeck(RESNET18_CHANNELS, fusion='sum')


@pytest.mark.parametrize('students', [(0, 3), (4, ), ()])
def test_bad_student_index_is_refused(students):
    with pytest.raises(ValueError, match=r'not a non-empty subset of '
                       r'\(1, 2, 3\)'):
        MFMNeck(RESNET18_CHANNELS, students=students)


def test_wrong_stage_count_names_out_indices():
    neck = MFMNeck(RESNET18_CHANNELS)
    with pytest.raises(ValueError, match=r'expects 4 backbone stage outputs.*'
                       r'got 1.*out_indices=\(0, 1, 2, 3\)'):
        neck(stages()[-1:])


def test_wrong_channels_name_the_fitting_values():
    neck = MFMNeck(RESNET18_CHANNELS)
    with pytest.raises(ValueError, match=r'channels \(64, 128, 256, 1024\).*'
                       r'in_channels=\(64, 128, 256, 1024\)'):
        neck(stages(channels=(64, 128, 256, 1024)))


def test_input_size_that_does_not_halve_is_refused():
    neck = MFMNeck((8, 16, 32, 64))
    x = list(stages(channels=(8, 16, 32, 64), size=32))
    x[3] = torch.randn(2, 64, 3, 3)  # e.g. a stage that rounded up
    with pytest.raises(ValueError, match=r'stage 3 is \(8, 8\) and stage 4 '
                       r'is \(3, 3\).*multiple of its total stride'):
        neck(tuple(x))
