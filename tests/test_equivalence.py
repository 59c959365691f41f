"""The fast path computes the plain transcription of the network, to rounding.

Each module built with ``fast=False`` runs the published architecture as
written (interpolate then conv, the kernel == stride branch conv as a
convolution, concat then 1x1 fuse); ``fast=True`` (the default) runs the
exact rewrites of ``teskd_mm.models.utils.fast_conv``. The two share their
state_dict, so loading one into the other with ``strict=True`` also checks
that checkpoints keep their layout. Outputs, gradients of inputs and
parameters, and the BN running statistics must agree.
"""
import pytest
import torch
import torch.nn as nn

import teskd_mm  # noqa: F401
from teskd_mm.models.heads.multi_branch_cls_head import (MultiBranchClsHead,
                                                         StudentBranch)
from teskd_mm.models.necks.mfm_neck import Lateral, MFMNeck, Upsample

from conftest import n_params

# fp64 shows the rewrites are identities (only rounding differs); fp32 is
# what training runs.
PRECISIONS = [(torch.float64, 1e-10), (torch.float32, 1e-4)]
NORM = dict(type='BN')


class Network(nn.Module):
    """An MFMNeck and a MultiBranchClsHead, all outputs as a flat list."""

    def __init__(self, in_channels, num_classes, fusion='mixed',
                 fast=True) -> None:
        super().__init__()
        self.neck = MFMNeck(in_channels, fusion=fusion, fast=fast)
        self.head = MultiBranchClsHead(num_classes, in_channels[-1],
                                       fast=fast)

    def forward(self, *stages):
        outs = self.head.forward_all(self.neck(list(stages)))
        flat = [outs.teacher_logits, outs.teacher_feat]
        for feat, logits in zip(outs.student_feats, outs.student_logits):
            flat.extend([feat, logits])
        return flat


def pair(build, seed=0):
    """The fast and the plain module, with the same random weights."""
    torch.manual_seed(seed)
    fast, plain = build(True), build(False)
    gen = torch.Generator().manual_seed(1)
    for m in fast.modules():
        # Non-trivial BN affine parameters, so that they are tested too.
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data = 0.5 + torch.rand(m.weight.shape, generator=gen)
            m.bias.data = 0.1 * torch.randn(m.bias.shape, generator=gen)
    plain.load_state_dict(fast.state_dict(), strict=True)
    return fast, plain


def compare(fast: nn.Module, plain: nn.Module, inputs, dtype, tol: float):
    """Outputs, input and parameter grads and BN buffers agree."""
    fast, plain = fast.to(dtype), plain.to(dtype)
    a = [x.detach().to(dtype).requires_grad_() for x in inputs]
    b = [x.detach().to(dtype).requires_grad_() for x in inputs]
    out_f, out_p = fast(*a), plain(*b)
    out_f = out_f if isinstance(out_f, (tuple, list)) else [out_f]
    out_p = out_p if isinstance(out_p, (tuple, list)) else [out_p]
    assert len(out_f) == len(out_p)
    gen = torch.Generator().manual_seed(2)
    weights = [torch.randn(o.shape, generator=gen).to(dtype) for o in out_p]
    for of, op in zip(out_f, out_p):
        torch.testing.assert_close(of, op, rtol=tol, atol=tol)
    sum((w * o).sum() for w, o in zip(weights, out_f)).backward()
    sum((w * o).sum() for w, o in zip(weights, out_p)).backward()
    for x, y in zip(a, b):
        torch.testing.assert_close(x.grad, y.grad, rtol=tol, atol=tol)
    plain_params = dict(plain.named_parameters())
    for n, p in fast.named_parameters():
        assert p.grad is not None, n
        torch.testing.assert_close(
            p.grad, plain_params[n].grad, rtol=tol, atol=tol, msg=n)
    plain_buffers = dict(plain.named_buffers())
    for n, v in fast.named_buffers():
        torch.testing.assert_close(v, plain_buffers[n], rtol=tol, atol=tol,
                                   msg=n)


def stages(in_channels, size, n=4):
    return [
        torch.randn(n, c, size // 2**i, size // 2**i)
        for i, c in enumerate(in_channels)
    ]


@pytest.mark.parametrize('dtype,tol', PRECISIONS)
def test_upsample(dtype, tol):
    fast, plain = pair(lambda f: Upsample(16, NORM, fast=f))
    compare(fast, plain, [torch.randn(3, 16, 4, 5)], dtype, tol)


@pytest.mark.parametrize('dtype,tol', PRECISIONS)
@pytest.mark.parametrize('k,size', [(8, 16), (4, 8), (2, 8), (1, 4),
                                    (4, 9)])
def test_student_branch(k, size, dtype, tol):
    """Kernel 8, 4, 2, 1; 9 px with k=4 takes the plain path (floor)."""
    fast, plain = pair(lambda f: StudentBranch(16, 24, 10, k, NORM, fast=f))
    x = torch.randn(3, 16, size, size)
    assert fast._fast(x) == (size % k == 0)  # which path runs
    assert not plain._fast(x)
    compare(fast, plain, [x], dtype, tol)


@pytest.mark.parametrize('dtype,tol', PRECISIONS)
@pytest.mark.parametrize('k', [8, 4, 2])
def test_student_branch_channels_last_and_eval(k, dtype, tol):
    """A channels_last input (patches gathered as (a, b, c)), and eval mode
    with the running statistics."""
    fast, plain = pair(lambda f: StudentBranch(16, 24, 10, k, NORM, fast=f))
    x = torch.randn(3, 16, 2 * k, 2 * k).to(
        dtype=dtype, memory_format=torch.channels_last)
    compare(fast, plain, [x], dtype, tol)
    fast.eval(), plain.eval()
    with torch.no_grad():
        for a, b in zip(fast(x), plain(x)):
            torch.testing.assert_close(a, b, rtol=tol, atol=tol)


@pytest.mark.parametrize('dtype,tol', PRECISIONS)
def test_neck_and_head(dtype, tol):
    """All of TESKD's auxiliary network: fusion, students, teacher fc."""
    in_channels = (8, 16, 24, 32)
    fast, plain = pair(lambda f: Network(in_channels, 10, fast=f))
    compare(fast, plain, stages(in_channels, 32), dtype, tol)


@pytest.mark.parametrize('fusion', ['add', 'concat', 'none'])
def test_other_fusions(fusion):
    in_channels = (8, 16, 24, 32)
    fast, plain = pair(
        lambda f: Network(in_channels, 10, fusion=fusion, fast=f))
    compare(fast, plain, stages(in_channels, 16, n=2), torch.float64, 1e-10)


def test_same_checkpoint_layout_at_full_width():
    """Checkpoint keys and shapes of the paper network do not depend on the
    switch; the neck and head hold the parameters the released network has."""
    fast = Network((64, 128, 256, 512), 100, fast=True)
    plain = Network((64, 128, 256, 512), 100, fast=False)
    fs, ps = fast.state_dict(), plain.state_dict()
    assert list(fs) == list(ps)
    assert all(fs[k].shape == ps[k].shape for k in fs)
    assert n_params(fast) == 37_050_832 - 11_220_132 + 51_300


@pytest.mark.parametrize('channels_last', [False, True])
def test_patchify_keeps_its_input_not_a_copy(channels_last):
    """The students' strided conv keeps ``x`` (alive anyway) for backward,
    not a patch copy as large as ``x``."""
    from teskd_mm.models.utils import patchify_conv
    conv = nn.Conv2d(16, 24, 4, stride=4)
    x = torch.randn(2, 16, 8, 8)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(
            lambda t: saved.append(t) or t, lambda t: t):
        out = patchify_conv(x, conv)
    assert any(t is x for t in saved)
    assert not [t for t in saved
                if t.numel() == x.numel() and t.data_ptr() != x.data_ptr()]
    out.sum().backward()
    assert x.grad.is_contiguous(memory_format=torch.channels_last
                                if channels_last else
                                torch.contiguous_format)
    # The weight's gradient in the weight's layout (DDP's buckets need it).
    assert conv.weight.grad.stride() == conv.weight.stride()


@pytest.mark.parametrize('channels_last', [False, True])
def test_patchify_copies_one_patch_row_at_a_time(channels_last):
    """Forward and backward gather the patches one row of ``k`` at a time:
    besides the input's gradient, no buffer of more than ``1/k`` of ``x``
    (large ones would come fresh from the system at every step)."""
    from torch.profiler import ProfilerActivity, profile

    from teskd_mm.models.utils import patchify_conv
    k = 4
    conv = nn.Conv2d(16, 24, k, stride=k)
    x = torch.randn(2, 16, 16, 16)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    with profile(activities=[ProfilerActivity.CPU],
                 profile_memory=True) as prof:
        patchify_conv(x, conv).sum().backward()
    sizes = [e.self_cpu_memory_usage for e in prof.events()
             if e.self_cpu_memory_usage > 0]
    x_bytes = x.numel() * x.element_size()
    w_bytes = conv.weight.numel() * conv.weight.element_size()
    # The gradients of the input and of the weight are made once each.
    assert sizes.count(x_bytes) == 1 and sizes.count(w_bytes) == 1
    assert max(s for s in sizes if s not in (x_bytes, w_bytes)) \
        <= x_bytes // k


def test_student_branch_under_autocast():
    """bf16 autocast: the fast branch's products run in bf16 as the plain
    branch's convolutions do, its gradients come back in fp32 and agree
    with the plain branch's under the same autocast."""
    fast, plain = pair(lambda f: StudentBranch(16, 24, 10, 4, NORM, fast=f))
    x = torch.randn(3, 16, 8, 8)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out_f, out_p = fast(a)[1], plain(b)[1]
        assert out_f.dtype == out_p.dtype == torch.bfloat16
        out_f.float().sum().backward()
        out_p.float().sum().backward()
    assert a.grad.dtype == torch.float32
    torch.testing.assert_close(a.grad, b.grad, rtol=0.02, atol=0.01)
    for (n, p), q in zip(fast.named_parameters(), plain.parameters()):
        assert p.grad.dtype == torch.float32, n
        torch.testing.assert_close(p.grad, q.grad, rtol=0.02, atol=0.01,
                                   msg=n)


@pytest.mark.parametrize('dtype,tol', PRECISIONS)
@pytest.mark.parametrize('momentum', [0.1, None])
def test_widening_lateral_folds_its_batch_statistics(dtype, tol, momentum):
    """A 1x1 conv-BN-ReLU from 4 to 16 channels: BN's statistics from the
    narrow input give the module's outputs, gradients and running
    statistics, over two steps (None: the cumulative average)."""
    from mmcv.cnn import ConvModule

    from teskd_mm.models.utils.fast_conv import (can_fold_batch_stats,
                                                  pointwise_bn_act)

    def build(fast):
        lateral = Lateral(4, 16, NORM, fast=fast)
        lateral.norm.momentum = momentum
        return lateral

    fast, plain = pair(build)
    assert can_fold_batch_stats(fast)
    for step in range(2):
        x = torch.randn(3, 4, 5, 6).relu() + step  # a non-zero mean
        compare(fast, plain, [x], dtype, tol)
    assert int(fast.norm.num_batches_tracked) == 2
    # Eval mode and narrower modules run as ConvModule.
    assert not can_fold_batch_stats(fast.eval())
    with pytest.raises(ValueError, match='check can_fold_batch_stats'):
        pointwise_bn_act(fast, x)
    assert not can_fold_batch_stats(ConvModule(8, 16, 1, norm_cfg=NORM))
    assert not can_fold_batch_stats(
        ConvModule(4, 16, 1, norm_cfg=dict(type='SyncBN')))


@pytest.mark.parametrize('dtype,spread', [(torch.bfloat16, 1),
                                          (torch.float16, 100)])
def test_folded_lateral_under_autocast(dtype, spread):
    """Under autocast the folded statistics stay in fp32 (as BN's do), so the
    fast lateral is as close to the fp32 result as the plain one is, and
    keeps the running statistics in fp32. With fp16 and a wide input, sums
    of squares in fp16 would overflow."""
    import copy
    fast, plain = pair(lambda f: Lateral(4, 16, NORM, fast=f))
    ref = copy.deepcopy(plain)
    # A large mean (which BN's normalisation amplifies) and spread.
    x = spread * (torch.randn(3, 4, 5, 6).relu() + 3)
    a, b, c = (x.clone().requires_grad_() for _ in range(3))
    expected = ref(c)
    with torch.autocast('cpu', dtype=dtype):
        out_f, out_p = fast(a), plain(b)
    err_f = (out_f.float() - expected).abs().max()
    err_p = (out_p.float() - expected).abs().max()
    assert err_p > 0  # bf16 did round
    assert err_f <= 2 * err_p
    (out_f.float() ** 2).sum().backward()
    (out_p.float() ** 2).sum().backward()
    assert a.grad.dtype == torch.float32
    torch.testing.assert_close(a.grad, b.grad, rtol=0.1, atol=0.5 / spread)
    for (n, u), v in zip(fast.named_buffers(), plain.buffers()):
        assert u.dtype == v.dtype, n
        torch.testing.assert_close(u, v, rtol=1e-2, atol=1e-2, msg=n)
