"""The fast TESKD modules compute REFERENCE.md's network, to rounding.

The reference below is a direct transcription of the spec with plain torch
modules (interpolate, then conv; kernel == stride conv as a conv; concat, then
1x1 fuse). Its state_dict keys are those of the project's modules, so loading
one into the other with ``strict=True`` also checks that checkpoints keep
their layout.
"""
from collections import OrderedDict

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import teskd_mm  # noqa: F401
from teskd_mm.models.heads.multi_branch_cls_head import (MultiBranchClsHead,
                                                         StudentBranch)
from teskd_mm.models.necks.mfm_neck import MFMNeck, Upsample
from teskd_mm.models.utils import is_pointwise, mixed_fuse


def cbr(cin: int, cout: int, k: int = 1, bias: bool = False) -> nn.Module:
    """conv -> BN -> ReLU, with ConvModule's parameter names."""
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(cin, cout, k, stride=k, bias=bias),
            bn=nn.BatchNorm2d(cout),
            act=nn.ReLU()))


class RefUpsample(nn.Module):
    """Upsample(x2, bilinear, align_corners=True) -> Conv1x1 -> BN -> ReLU."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = cbr(c, c)

    def forward(self, x):
        return self.conv(
            F.interpolate(x, scale_factor=2, mode='bilinear',
                          align_corners=True))


class RefBranch(nn.Module):
    """Conv(k, stride k, bias) BN ReLU, Conv1x1(bias) BN ReLU, GAP, Linear."""

    def __init__(self, cin: int, c: int, num_classes: int, k: int) -> None:
        super().__init__()
        self.reduce = cbr(cin, c, k, bias=True)
        self.mix = cbr(c, c, 1, bias=True)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x):
        feat = self.mix(self.reduce(x)).mean(dim=(2, 3))
        return feat, self.fc(feat)


class RefNeck(nn.Module):
    """The Mixed Fusion Module (and the other fusions of Table 4)."""

    def __init__(self, in_channels, fusion: str = 'mixed') -> None:
        super().__init__()
        c = in_channels[-1]
        self.fusion = fusion
        self.lateral_top = cbr(in_channels[-1], c)
        if fusion != 'none':
            self.laterals = nn.ModuleDict(
                {str(b): cbr(in_channels[b - 1], c)
                 for b in (1, 2, 3)})
        self.upsamples = nn.ModuleDict(
            {str(b): RefUpsample(c)
             for b in (1, 2, 3)})
        if fusion in ('mixed', 'concat'):
            self.fuses = nn.ModuleDict(
                {str(b): cbr(2 * c, c)
                 for b in (1, 2, 3)})

    def forward(self, stages):
        s = self.lateral_top(stages[-1])
        fused = {}
        for b in (3, 2, 1):
            u = self.upsamples[str(b)](s)
            if self.fusion == 'none':
                s = u
            else:
                lat = self.laterals[str(b)](stages[b - 1])
            if self.fusion == 'add':
                s = u + lat
            elif self.fusion == 'mixed':
                s = self.fuses[str(b)](torch.cat([u + lat, u], dim=1))
            elif self.fusion == 'concat':
                s = self.fuses[str(b)](torch.cat([u, lat], dim=1))
            fused[b] = s
        return [fused[b] for b in (1, 2, 3)]


class RefTESKD(RefNeck):
    """The Mixed Fusion Module and the three students, as REFERENCE.md."""

    def __init__(self, in_channels, num_classes: int) -> None:
        super().__init__(in_channels)
        c = in_channels[-1]
        self.fc = nn.Linear(c, num_classes)
        self.branches = nn.ModuleDict({
            str(b): RefBranch(c, c, num_classes, k)
            for b, k in ((1, 8), (2, 4), (3, 2))
        })

    def forward(self, stages):
        fused = dict(zip((1, 2, 3), super().forward(stages)))
        teacher_feat = stages[-1].mean(dim=(2, 3))
        outs = [self.fc(teacher_feat), teacher_feat]
        for b in (1, 2, 3):
            outs.extend(self.branches[str(b)](fused[b]))
        return outs


class FastTESKD(nn.Module):
    """The project's neck and head, returning what RefTESKD returns."""

    def __init__(self, in_channels, num_classes: int) -> None:
        super().__init__()
        self.neck = MFMNeck(in_channels)
        self.head = MultiBranchClsHead(num_classes, in_channels[-1])

    def forward(self, stages):
        outs = self.head.forward_all(self.neck(stages))
        flat = [outs.teacher_logits, outs.teacher_feat]
        for feat, logits in zip(outs.student_feats, outs.student_logits):
            flat.extend([feat, logits])
        return flat


class StagesAsArgs(nn.Module):
    """Takes the stages as separate arguments, for :func:`compare`."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *stages):
        return self.model(list(stages))


def ref_state(fast: FastTESKD) -> dict:
    """FastTESKD's state_dict under RefTESKD's (flat) names."""
    out = {}
    for k, v in fast.state_dict().items():
        k = k.split('.', 1)[1]  # drop neck. / head.
        out[k] = v
    return out


def randomize_bn(model: nn.Module) -> None:
    """Non-trivial BN affine parameters, so that they are tested too."""
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data = 0.5 + torch.rand(m.weight.shape, generator=gen)
            m.bias.data = 0.1 * torch.randn(m.bias.shape, generator=gen)


def compare(fast: nn.Module, ref: nn.Module, inputs, dtype, tol: float):
    """Outputs, input and parameter grads and BN buffers agree."""
    fast, ref = fast.to(dtype), ref.to(dtype)
    a = [x.detach().to(dtype).requires_grad_() for x in inputs]
    b = [x.detach().to(dtype).requires_grad_() for x in inputs]
    out_f, out_r = fast(*a), ref(*b)
    out_f = out_f if isinstance(out_f, (tuple, list)) else [out_f]
    out_r = out_r if isinstance(out_r, (tuple, list)) else [out_r]
    assert len(out_f) == len(out_r)
    gen = torch.Generator().manual_seed(2)
    weights = [torch.randn(o.shape, generator=gen).to(dtype) for o in out_r]
    for of, orf in zip(out_f, out_r):
        torch.testing.assert_close(of, orf, rtol=tol, atol=tol)
    sum((w * o).sum() for w, o in zip(weights, out_f)).backward()
    sum((w * o).sum() for w, o in zip(weights, out_r)).backward()
    for x, y in zip(a, b):
        torch.testing.assert_close(x.grad, y.grad, rtol=tol, atol=tol)
    grads_r = dict(ref.named_parameters())
    names_f = [n for n, _ in fast.named_parameters()]
    for (n, p), nr in zip(fast.named_parameters(), grads_r):
        assert p.grad is not None, n
        torch.testing.assert_close(
            p.grad, grads_r[nr].grad, rtol=tol, atol=tol, msg=n)
    assert len(names_f) == len(grads_r)
    for (n, v), (_, w) in zip(fast.named_buffers(), ref.named_buffers()):
        torch.testing.assert_close(v.to(w.dtype), w, rtol=tol, atol=tol,
                                   msg=n)
    return out_f


# fp64 shows the rewrites are identities (only rounding differs); fp32 is
# what training runs.
PRECISIONS = [(torch.float64, 1e-10), (torch.float32, 1e-4)]


@pytest.mark.parametrize('dtype,tol', PRECISIONS)
def test_upsample_matches_interpolate_then_conv(dtype, tol):
    torch.manual_seed(0)
    fast = Upsample(16, dict(type='BN'))
    ref = RefUpsample(16)
    randomize_bn(fast)
    ref.load_state_dict(fast.state_dict(), strict=True)
    assert is_pointwise(fast.conv)  # the rewritten path runs
    compare(fast, ref, [torch.randn(3, 16, 4, 5)], dtype, tol)


@pytest.mark.parametrize('dtype,tol', PRECISIONS)
@pytest.mark.parametrize('k,size', [(8, 16), (4, 8), (2, 8), (1, 4),
                                    (4, 9)])
def test_branch_matches_strided_conv(k, size, dtype, tol):
    """Kernel 8, 4, 2, 1; 9 px with k=4 takes the plain path (floor)."""
    torch.manual_seed(0)
    fast = StudentBranch(16, 24, 10, k, dict(type='BN'))
    ref = RefBranch(16, 24, 10, k)
    randomize_bn(fast)
    ref.load_state_dict(fast.state_dict(), strict=True)
    x = torch.randn(3, 16, size, size)
    assert fast._fast(x) == (size % k == 0)  # which path runs
    compare(fast, ref, [x], dtype, tol)


@pytest.mark.parametrize('dtype,tol', PRECISIONS)
@pytest.mark.parametrize('k', [8, 4, 2])
def test_branch_channels_last_and_eval(k, dtype, tol):
    """A channels_last input (patches gathered as (a, b, c)), and eval mode
    with the running statistics."""
    torch.manual_seed(0)
    fast = StudentBranch(16, 24, 10, k, dict(type='BN'))
    ref = RefBranch(16, 24, 10, k)
    randomize_bn(fast)
    ref.load_state_dict(fast.state_dict(), strict=True)
    x = torch.randn(3, 16, 2 * k, 2 * k).to(
        dtype=dtype, memory_format=torch.channels_last)
    compare(fast, ref, [x], dtype, tol)
    fast.eval(), ref.eval()
    with torch.no_grad():
        for a, b in zip(fast(x), ref(x)):
            torch.testing.assert_close(a, b, rtol=tol, atol=tol)


@pytest.mark.parametrize('dtype,tol', PRECISIONS)
def test_neck_and_head_match_reference(dtype, tol):
    """All of TESKD's auxiliary network: fusion, students, teacher fc."""
    torch.manual_seed(0)
    in_channels = (8, 16, 24, 32)
    fast = FastTESKD(in_channels, num_classes=10)
    fast.head.init_weights()
    randomize_bn(fast)
    ref = RefTESKD(in_channels, num_classes=10)
    ref.load_state_dict(ref_state(fast), strict=True)
    stages = [
        torch.randn(4, c, 32 // 2**i, 32 // 2**i)
        for i, c in enumerate(in_channels)
    ]
    compare(StagesAsArgs(fast), StagesAsArgs(ref), stages, dtype, tol)


@pytest.mark.parametrize('fusion', ['add', 'concat', 'none'])
def test_other_fusions_match_reference(fusion):
    torch.manual_seed(0)
    in_channels = (8, 16, 24, 32)
    fast = MFMNeck(in_channels, fusion=fusion)
    randomize_bn(fast)
    ref = RefNeck(in_channels, fusion)
    ref.load_state_dict(fast.state_dict(), strict=True)
    stages = [
        torch.randn(2, c, 16 // 2**i, 16 // 2**i)
        for i, c in enumerate(in_channels)
    ]
    compare(StagesAsArgs(_Students(fast)), StagesAsArgs(ref), stages,
            torch.float64, 1e-10)


class _Students(nn.Module):
    """MFMNeck returning its student maps as a list, as RefNeck does."""

    def __init__(self, neck: MFMNeck) -> None:
        super().__init__()
        self.neck = neck

    def forward(self, stages):
        return list(self.neck(stages).students)


@pytest.mark.parametrize('dtype,tol', PRECISIONS)
@pytest.mark.parametrize('bias', [False, True])
def test_mixed_fuse_is_the_concat_conv(bias, dtype, tol):
    """W_a lat + (W_a + W_b) u == conv over cat([u + lat, u])."""
    from mmcv.cnn import ConvModule
    torch.manual_seed(0)
    fast = ConvModule(32, 16, 1, bias=bias, norm_cfg=dict(type='BN'))
    ref = cbr(32, 16, bias=bias)
    randomize_bn(fast)
    ref.load_state_dict(fast.state_dict(), strict=True)
    u, lat = torch.randn(3, 16, 5, 4), torch.randn(3, 16, 5, 4)

    class Fast(nn.Module):

        def __init__(self):
            super().__init__()
            self.fuse = fast

        def forward(self, u, lat):
            return mixed_fuse(self.fuse, u, lat)

    class Ref(nn.Module):

        def __init__(self):
            super().__init__()
            self.fuse = ref

        def forward(self, u, lat):
            return self.fuse(torch.cat([u + lat, u], dim=1))

    compare(Fast(), Ref(), [u, lat], dtype, tol)


def test_state_dict_layout_unchanged():
    """Checkpoint keys and shapes of the paper network at full width."""
    fast = FastTESKD((64, 128, 256, 512), num_classes=100)
    ref = RefTESKD((64, 128, 256, 512), num_classes=100)
    fs, rs = ref_state(fast), ref.state_dict()
    assert list(fs) == list(rs)
    assert all(fs[k].shape == rs[k].shape for k in rs)
    assert sum(p.numel() for p in fast.parameters()) == \
        37_050_832 - 11_220_132 + 51_300
