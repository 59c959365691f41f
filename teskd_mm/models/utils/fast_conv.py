"""Exact rewrites of TESKD's convolutions that run faster.

The modules of this package run them when built with ``fast=True`` (the
default); ``fast=False`` runs the plain transcription of the published
architecture instead. Each rewrite computes the same function as the
modules whose parameters it uses, up to floating-point rounding, and falls
back to running the modules as they are where it does not apply;
checkpoints are the same either way.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.function import once_differentiable
from torch.nn.modules.batchnorm import _BatchNorm


def _is_rows_last(x: torch.Tensor) -> bool:
    """Whether ``x`` is channels_last (and not also contiguous), so that a
    patch row holds whole ``k * C`` runs of memory."""
    return (not x.is_contiguous()
            and x.is_contiguous(memory_format=torch.channels_last))


def _patch_row_view(x: torch.Tensor, k: int, a: int,
                    last: bool) -> torch.Tensor:
    """Row ``a`` of every ``k x k`` patch of ``x``, as an ``(N, h, w, k*C)``
    view (``(b, c)`` order) if ``last`` else ``(N, h, w, C*k)`` (``(c, b)``)."""
    n, c, height, width = x.shape
    h, w = height // k, width // k
    if last:
        return x.permute(0, 2, 3, 1).view(n, h, k, w, k * c)[:, :, a]
    return x.view(n, c, h, k, w, k)[:, :, :, a].permute(0, 2, 3, 1, 4)


def _gather_rows(x: torch.Tensor, k: int, a: int, last: bool,
                 dtype: torch.dtype) -> torch.Tensor:
    """:func:`_patch_row_view` copied into ``(N*h*w, C*k)`` rows of ``dtype``
    (one copy, casting included)."""
    view = _patch_row_view(x, k, a, last)
    rows = torch.empty(view.shape, dtype=dtype, device=x.device)
    return rows.copy_(view).flatten(0, 2).flatten(1)


def _weight_rows(weight: torch.Tensor, a: int, last: bool) -> torch.Tensor:
    """Row ``a`` of the conv's kernel as ``(C_out, C*k)``, in the order of
    :func:`_patch_row_view`."""
    w = weight[:, :, a]  # (C_out, C, k)
    return (w.transpose(1, 2) if last else w).flatten(1)


class _PatchifyConv(torch.autograd.Function):
    """``patchify_conv`` one patch row at a time, keeping ``x`` for backward.

    The conv over ``k x k`` patches is the sum over the ``k`` patch rows of
    a ``(N*h*w, k*C) @ (k*C, C_out)`` product. Gathering one row at a time
    needs a copy ``k`` times smaller than the patches, small enough that the
    allocator reuses it (large blocks come fresh from the system and fault
    every page in again, each time); backward regathers the rows from ``x``,
    which the layer that made it keeps alive anyway, and writes the input's
    gradient row by row into its place.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, k):
        last = _is_rows_last(x)
        if not last:
            x = x.contiguous()
        # Row 0 through F.linear, so that autocast picks the compute dtype;
        # the others follow it.
        out = F.linear(_gather_rows(x, k, 0, last, x.dtype),
                       _weight_rows(weight, 0, last), bias)
        for a in range(1, k):
            # addmm with out=, not addmm_: the profiler counts its FLOPs.
            torch.addmm(out, _gather_rows(x, k, a, last, out.dtype),
                        _weight_rows(weight, a, last).to(out.dtype).t(),
                        out=out)
        ctx.save_for_backward(x, weight)
        ctx.k, ctx.last, ctx.with_bias = k, last, bias is not None
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        k, last = ctx.k, ctx.last
        # Under autocast the products ran in grad's dtype; so do their
        # gradients, and each returns in its input's dtype.
        dtype = grad.dtype
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.empty_like(
                x, memory_format=torch.channels_last
                if last else torch.contiguous_format)
        if ctx.needs_input_grad[1]:
            # In the weight's own layout, as autograd and DDP expect.
            grad_weight = torch.empty_like(weight)
        grad_t = grad.t()
        for a in range(k):
            if grad_weight is not None:
                g = grad_t.mm(_gather_rows(x, k, a, last, dtype))
                g = g.view(g.shape[0], k, -1).transpose(1, 2) if last else \
                    g.view(g.shape[0], -1, k)
                grad_weight[:, :, a] = g
            if grad_x is not None:
                g = grad.mm(_weight_rows(weight, a, last).to(dtype))
                view = _patch_row_view(grad_x, k, a, last)
                view.copy_(g.view(view.shape))
        if ctx.with_bias and ctx.needs_input_grad[2]:
            grad_bias = grad.sum(0).to(weight.dtype)
        return grad_x, grad_weight, grad_bias, None


def patchify_conv(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """Run a convolution whose kernel equals its stride as matrix products.

    Non-overlapping ``k x k`` patches are a space-to-depth reshape of ``x``,
    so the convolution is a ``(N*h*w, C*k*k) @ (C*k*k, C_out)`` product,
    which BLAS runs at full speed where the convolution kernels for large
    ``k`` do not; it runs as ``k`` products, one per row of the patches,
    each over a copy ``k`` times smaller than ``x``. Backward regathers the
    rows from ``x`` instead of keeping them.

    Args:
        x (Tensor): ``(N, C, k*h, k*w)``, any memory format.
        conv (nn.Conv2d): The convolution, with ``kernel_size == stride``
            (square), no padding, dilation 1 and one group.

    Returns:
        Tensor: ``(N*h*w, C_out)``, rows in ``(n, i, j)`` order.
    """
    return _PatchifyConv.apply(x, conv.weight, conv.bias, conv.kernel_size[0])


def conv1x1_rows(rows: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """A 1x1 convolution on ``(M, C)`` pixel rows: one matmul."""
    return F.linear(rows, conv.weight.flatten(1), conv.bias)


def is_pointwise(module: nn.Module) -> bool:
    """Whether ``module`` is a ConvModule (conv, norm, act) whose conv is a
    plain 1x1 convolution."""
    conv = getattr(module, 'conv', None)
    return (type(conv) is nn.Conv2d and conv.kernel_size == (1, 1)
            and conv.stride == (1, 1) and conv.padding == (0, 0)
            and conv.groups == 1
            and not getattr(module, 'with_explicit_padding', False)
            and tuple(getattr(module, 'order', ())) == ('conv', 'norm', 'act'))


def mixed_fuse(fuse: nn.Module, u: torch.Tensor,
               lat: torch.Tensor) -> torch.Tensor:
    """``fuse(cat([u + lat, u]))`` without the sum and the concatenation.

    With the 1x1 conv's weight split as ``[W_a | W_b]`` over the two halves,
    ``W_a (u + lat) + W_b u = W_a lat + (W_a + W_b) u``: two convs of half
    the input width, the same multiply-adds, and no ``2C``-channel map to
    write and read back (forward and backward).

    Args:
        fuse (nn.Module): A ConvModule over ``2C`` channels; anything else
            runs as written above.
        u (Tensor): The upsampled map, ``(N, C, H, W)``.
        lat (Tensor): The lateral map, ``(N, C, H, W)``.
    """
    if not is_pointwise(fuse) or fuse.conv.in_channels != 2 * u.shape[1]:
        return fuse(torch.cat([u + lat, u], dim=1))
    conv = fuse.conv
    w_a, w_b = conv.weight.split(u.shape[1], dim=1)
    x = F.conv2d(lat, w_a, conv.bias).add_(F.conv2d(u, w_a + w_b))
    return norm_act(fuse, x)


def can_fold_batch_stats(module: nn.Module) -> bool:
    """Whether :func:`pointwise_bn_act` applies: a 1x1 ConvModule widening
    at least fourfold (below that the statistics cost about what they save)
    into a training-mode ``nn.BatchNorm2d`` (not SyncBN, whose statistics
    span processes)."""
    norm = getattr(module, 'norm', None) if \
        getattr(module, 'with_norm', False) else None
    return (is_pointwise(module) and type(norm) is nn.BatchNorm2d
            and norm.training and norm.track_running_stats and norm.affine
            and 4 * module.conv.in_channels <= module.conv.out_channels)


def pointwise_bn_act(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A widening 1x1 conv, training-mode BN and activation as one conv.

    The batch statistics of ``y = W x`` follow from those of the narrow
    input: ``mean(y) = W mean(x)`` and ``var(y) = diag(W cov(x) W^T)``, with
    ``cov(x)`` a small ``C_in x C_in`` product of the centred input. BN is
    then an affine map that folds into the conv's weight and bias, so the
    wide output is written once and BN never passes over it, forward or
    backward; autograd through the statistics gives BN's exact gradient.
    The running statistics are updated as ``nn.BatchNorm2d`` does.

    Args:
        module (nn.Module): A ConvModule for which
            :func:`can_fold_batch_stats` holds.
        x (Tensor): Its input ``(N, C_in, H, W)``.
    """
    if not can_fold_batch_stats(module):
        raise ValueError(
            'pointwise_bn_act takes a widening 1x1 conv with a training-mode '
            f'BatchNorm2d, not this {type(module).__name__}; check '
            'can_fold_batch_stats first.')
    conv, bn = module.conv, module.norm
    # The statistics in fp32 at least, whatever autocast does, as BN keeps
    # its own.
    dtype = torch.promote_types(
        torch.promote_types(x.dtype, conv.weight.dtype), torch.float32)
    with torch.autocast(x.device.type, enabled=False):
        weight = conv.weight.flatten(1).to(dtype)
        rows = x.permute(0, 2, 3, 1).reshape(-1, x.shape[1]).to(dtype)
        num = rows.shape[0]
        mean_x = rows.mean(0)
        centred = rows - mean_x
        cov = centred.t().mm(centred) / num
        mean = weight.mv(mean_x)
        if conv.bias is not None:
            mean = mean + conv.bias.to(dtype)
        var = (weight.mm(cov) * weight).sum(1)  # biased, as BN normalises
        scale = bn.weight.to(dtype) * torch.rsqrt(var + bn.eps)
        bias = bn.bias.to(dtype) - mean * scale
    with torch.no_grad():
        bn.num_batches_tracked.add_(1)
        momentum = bn.momentum if bn.momentum is not None else \
            1.0 / float(bn.num_batches_tracked)
        bn.running_mean.lerp_(mean.detach().to(bn.running_mean.dtype),
                              momentum)
        unbiased = var.detach() * num / max(num - 1, 1)
        bn.running_var.lerp_(unbiased.to(bn.running_var.dtype), momentum)
    out = F.conv2d(x, conv.weight * scale.view(-1, 1, 1, 1).to(
        conv.weight.dtype), bias.to(conv.weight.dtype))
    return module.activate(out) if module.with_activation else out


def can_patchify(module: nn.Module) -> bool:
    """Whether a ConvModule can run as :func:`patchify_conv` and
    :func:`norm_act`: a plain conv with kernel == stride, no
    padding, dilation 1, one group, then a batch norm (or none), in mmcv's
    default order."""
    conv = getattr(module, 'conv', None)
    if type(conv) is not nn.Conv2d:
        return False
    k = conv.kernel_size
    return (k[0] == k[1] and tuple(conv.stride) == tuple(k)
            and tuple(conv.padding) == (0, 0)
            and tuple(conv.dilation) == (1, 1) and conv.groups == 1
            and conv.padding_mode == 'zeros'
            and not getattr(module, 'with_explicit_padding', False)
            and tuple(module.order) == ('conv', 'norm', 'act')
            and (not module.with_norm
                 or isinstance(module.norm, _BatchNorm)))


def norm_act(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a ConvModule's norm and activation, after its conv has run.

    ``x`` is a map ``(N, C, H, W)`` or pixel rows ``(M, C)``. Batch norm over
    ``(N, C, h, w)`` takes its statistics over the ``N*h*w`` pixels; viewing
    the rows as ``(M, C, 1, 1)`` gives it the same pixels, so the module's
    own norm layer (BN, SyncBN, ...) runs as is.
    """
    rows = x.dim() == 2
    if rows:
        x = x.reshape(*x.shape, 1, 1)
    if module.with_norm:
        x = module.norm(x)
    if module.with_activation:
        x = module.activate(x)
    return x.flatten(1) if rows else x
