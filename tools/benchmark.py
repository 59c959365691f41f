"""Time the full training step of a model against a baseline, interleaved.

    python tools/benchmark.py CONFIG [--baseline CONFIG] [--batch-size 64]
        [--iters 20] [--warmup 3] [--threads 2] [--device cpu|cuda]
        [--amp bf16|fp16] [--channels-last] [--compile] [--deployed-teacher]
        [--ablation] [--variant NAME=KEY=VALUE[,KEY=VALUE...] ...]
        [--out RESULT.json]

A training step is what the Runner runs each iteration,
``model.train_step(data, optim_wrapper)``: data preprocessor, forward, loss,
backward and the optimizer step of the config's ``optim_wrapper``, here on
the config's :func:`~teskd_mm.utils.inputs.dummy_batch`. The steps of all
models alternate (A B, B A, ...) after the warm-up, so a change of machine
load hits them alike. A variant is CONFIG with ``--cfg-options``-style
overrides; ``--ablation`` adds the variant ``plain``: TESKD's neck and head
without their exact speed rewrites (``fast=False``). ``--deployed-teacher``
also times inference of the teacher as ``tools/deploy.py`` exports it
against the baseline. Data loading: ``tools/analysis/data_loading.py``.
"""
import argparse
import contextlib
import copy
import ctypes
import gc
import inspect
import json
import os
import os.path as osp
import platform
import re
import resource
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from mmengine.config import Config, DictAction
from mmengine.optim import build_optim_wrapper

from mmpretrain.registry import MODELS
from teskd_mm.apis.deploy import DeployError, stock_model_cfg
from teskd_mm.hooks.heap_reuse_hook import reuse_as_declared
from teskd_mm.utils import ConfigCheckError, prepare_cfg, setup_step_tool
from teskd_mm.utils.cli import check_at_least, refuse_existing_out
from teskd_mm.utils.inputs import dummy_batch, input_size
from teskd_mm.utils.preflight.model import build_model

AMP_DTYPES = {'bf16': 'bfloat16', 'fp16': 'float16'}
PLAIN = 'plain=model.neck.fast=False,model.head.fast=False'
RESERVED = ('model', 'baseline')


def _error(message: str) -> SystemExit:
    return SystemExit(f'benchmark: error: {message}')


def parse_variant(spec: str) -> Tuple[str, Dict[str, Any]]:
    """Parse ``NAME=KEY=VALUE[,KEY=VALUE...]`` into a name and overrides.

    Args:
        spec (str): The text of ``--variant``. Values are read as
            ``--cfg-options`` reads them: ``KEY=1,2`` is a list.

    Returns:
        tuple: The name and the ``{dotted key: value}`` overrides.
    """
    name, _, rest = spec.partition('=')
    # An override starts after a comma followed by KEY=; other commas
    # belong to a list value.
    items = [p.split('=', 1) for p in re.split(r',(?=[\w.]+=)', rest)]
    if not name or not rest or any(len(i) != 2 or not i[0] for i in items):
        raise argparse.ArgumentTypeError(
            f'{spec!r} is not NAME=KEY=VALUE[,KEY=VALUE...], e.g. {PLAIN}')
    return name, {k: DictAction._parse_iterable(v) for k, v in items}


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse and check the command line; no config is read here."""
    p = argparse.ArgumentParser(
        description='Time training steps of a model against a baseline')
    p.add_argument('config', help='config of the model to time')
    p.add_argument('--baseline', help='config of the model to compare with')
    p.add_argument('--batch-size', type=int, default=64)
    p.add_argument('--iters', type=int, default=20,
                   help='timed steps of each model (after the warm-up)')
    p.add_argument('--warmup', type=int, default=3,
                   help='untimed steps of each model')
    p.add_argument('--threads', type=int, help='torch CPU threads')
    p.add_argument('--device', default='cpu', help='cpu, cuda, cuda:1')
    p.add_argument('--amp', choices=sorted(AMP_DTYPES),
                   help='mixed precision, as the Runner\'s AmpOptimWrapper')
    p.add_argument('--channels-last', action='store_true',
                   help='models in the channels_last memory format')
    p.add_argument('--compile', action='store_true',
                   help='torch.compile the train_step, as cfg.compile')
    p.add_argument('--variant', action='append', type=parse_variant,
                   default=[], metavar='NAME=KEY=VALUE[,KEY=VALUE...]',
                   help='also time CONFIG with these overrides (repeatable)')
    p.add_argument('--ablation', action='store_true',
                   help=f'add the variant {PLAIN}')
    p.add_argument('--deployed-teacher', action='store_true',
                   help='also time inference of the deployed teacher of '
                   'CONFIG against the baseline')
    p.add_argument('--out', help='also write the results to this new JSON')
    args = p.parse_args(argv)
    check_at_least(p, args, dict(batch_size=1, iters=1, warmup=0,
                                 threads=1))
    refuse_existing_out(p, args.out)
    for flag in ('deployed_teacher', 'ablation', 'variant'):
        if getattr(args, flag) and not args.baseline:
            p.error(f'--{flag.replace("_", "-")} compares with the '
                    'baseline; give --baseline CONFIG too')
    args.variant += [parse_variant(PLAIN)] if args.ablation else []
    names = [n for n, _ in args.variant]
    if len(set(names)) < len(names) or set(names) & set(RESERVED):
        p.error(f'--variant names {names} must differ from each other and '
                f'from {RESERVED}')
    return args


def _status_kib(field: str) -> Optional[int]:
    with contextlib.suppress(OSError), open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    return None


def cpu_peak_memory(fn: Callable[[], Any]) -> Tuple[int, str]:
    """Peak resident memory that ``fn()`` adds, in bytes, and the method.

    Freed heap is handed back first (``malloc_trim``) and the kernel's
    high-water mark reset (``/proc/self/clear_refs``), so the figure is what
    ``fn`` needed on top of what was resident. Without the reset it falls
    back to ``ru_maxrss``, which only grows: an upper bound.
    """
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL('libc.so.6').malloc_trim(0)
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        method, start = 'VmHWM after clear_refs', _status_kib('VmRSS')
    except OSError:
        method = 'ru_maxrss (monotonic; an upper bound)'
        start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fn()
    peak = _status_kib('VmHWM') if method.startswith('VmHWM') else \
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return max(0, peak - start) * 1024, method


def load_config(path: str):
    """Read a config, adjusted to the installed libraries."""
    if not osp.isfile(path):
        raise _error(f'config {path} does not exist')
    return prepare_cfg(Config.fromfile(path))


def variant_config(cfg, what: str, options: Dict[str, Any]):
    """CONFIG with a variant's overrides merged, as ``--cfg-options`` does.

    A new leaf is allowed (``fast`` is mostly left at its default), but its
    parent must exist, and a model component must take it as an argument,
    so that a mistyped key is an error, not a no-op.

    Args:
        cfg (Config): CONFIG.
        what (str): The option that gave the variant, for messages.
        options (dict): ``{dotted key: value}``.
    """
    for key in options:
        node, parts = cfg.to_dict(), key.split('.')
        for i, part in enumerate(parts[:-1]):
            if isinstance(node, (list, tuple)) and part.isdigit():
                node = node[int(part)] if int(part) < len(node) else None
            else:
                node = node.get(part) if isinstance(node, dict) else None
            if not isinstance(node, (dict, list, tuple)):
                raise _error(f'{what}: {key}: the config has no dict or list '
                             f'{".".join(parts[:i + 1])}')
        kind = node.get('type') if isinstance(node, dict) else None
        cls = MODELS.get(kind) if isinstance(kind, str) else None
        params = inspect.signature(cls).parameters if cls else {}
        if params and parts[-1] not in params and not any(
                v.kind == v.VAR_KEYWORD for v in params.values()):
            raise _error(f'{what}: {key}: {".".join(parts[:-1])} is {kind}, '
                         f'which takes no argument {parts[-1]!r}')
    out = copy.deepcopy(cfg)
    out.merge_from_dict(options)
    return out


def build(cfg, what: str, device='cpu', channels_last: bool = False):
    """Build and initialise ``cfg.model``, with the config's preprocessor."""
    try:
        model = build_model(cfg)
    except ConfigCheckError as e:
        raise _error(f'{what}: {e}')
    model.init_weights()
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return model


class Timed:
    """One model, the step to time and its times.

    Args:
        name (str): The model's name in the results.
        cfg (Config): Its config.
        args (Namespace): The command line.
        device (torch.device): Where it runs.
        train (bool): Time ``train_step`` with the config's optimizer
            wrapper on a training batch; else inference on a test batch.
    """

    def __init__(self, name: str, cfg, args, device,
                 train: bool = True) -> None:
        self.name, self.times, self.device = name, [], device
        # One seed for all: the variants of a network get the same weights.
        torch.manual_seed(0)
        self.model = build(cfg, name, device, args.channels_last).train(train)
        self.num_params = sum(p.numel() for p in self.model.parameters())
        torch.manual_seed(1)
        batch = dummy_batch(cfg, 'train' if train else 'test',
                            args.batch_size)
        if train:
            optim_cfg = copy.deepcopy(cfg.optim_wrapper)
            if args.amp:  # as tools/train.py --amp, with the chosen dtype
                optim_cfg.update(type='AmpOptimWrapper',
                                 dtype=AMP_DTYPES[args.amp])
                optim_cfg.setdefault('loss_scale', 'dynamic')
            wrapper = build_optim_wrapper(self.model, optim_cfg)
            step = torch.compile(self.model.train_step) if args.compile \
                else self.model.train_step
            self.run = lambda: step(batch, wrapper)
        else:
            self.run = lambda: self._infer(batch, args.amp)

    def _infer(self, batch: dict, amp: Optional[str]) -> None:
        autocast = torch.autocast(self.device.type, getattr(
            torch, AMP_DTYPES[amp])) if amp else contextlib.nullcontext()
        with torch.inference_mode(), autocast:
            data = self.model.data_preprocessor(batch, False)
            self.model(data['inputs'], mode='tensor')

    def step(self) -> float:
        start = time.perf_counter()
        self.run()
        if self.device.type == 'cuda':  # wait for the queued kernels
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - start

    def peak_memory(self) -> Dict:
        """Peak memory of one more, untimed, step."""
        if self.device.type == 'cuda':
            torch.cuda.reset_peak_memory_stats(self.device)
            self.step()
            return dict(
                peak_memory_bytes=torch.cuda.max_memory_allocated(self.device),
                memory_method='torch.cuda.max_memory_allocated')
        peak, method = cpu_peak_memory(self.step)
        return dict(peak_memory_bytes=peak,
                    memory_method=f'peak RSS increase in one step, {method}')

    def summary(self, batch_size: int, base: Optional['Timed'] = None) -> Dict:
        """Step time statistics; with ``base``, the ratios to its times."""
        med = statistics.median(self.times)
        out = dict(median_step_s=med, min_step_s=min(self.times),
                   max_step_s=max(self.times), step_times_s=self.times,
                   images_per_s=batch_size / med, num_params=self.num_params)
        if base is not None and base is not self:
            out['ratio'] = med / statistics.median(base.times)
            # Each round's steps ran back to back, under the same load.
            out['median_round_ratio'] = statistics.median(
                t / b for t, b in zip(self.times, base.times))
        return out


def interleave(runners: List[Timed], warmup: int, iters: int) -> None:
    """Run the steps in rounds, in reverse order every other round."""
    for i in range(warmup + iters):
        for r in (runners if i % 2 == 0 else runners[::-1]):
            t = r.step()
            if i >= warmup:
                r.times.append(t)


def deployed_teacher(teacher_cfg, base_cfg, args, device) -> Dict:
    """Inference of the deployed teacher against the baseline, interleaved."""
    runners = [Timed(n, c, args, device, train=False)
               for n, c in (('teacher', teacher_cfg), ('baseline', base_cfg))]
    interleave(runners, args.warmup, args.iters)
    t, b = (statistics.median(r.times) for r in runners)
    types, shapes = ([[type(m) for m in r.model.modules()] for r in runners],
                     [[v.shape for v in r.model.state_dict().values()]
                      for r in runners])
    return dict(same_module_types=types[0] == types[1],
                same_parameter_shapes=shapes[0] == shapes[1],
                teacher_inference_s=t, baseline_inference_s=b,
                inference_ratio=t / b)


def check_device(args) -> torch.device:
    """The device, refused with a reason before anything is built."""
    try:
        device = torch.device(args.device)
    except RuntimeError:
        raise _error(f'--device {args.device!r} is not a torch device; use '
                     'cpu or cuda')
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise _error(f'--device {args.device} but torch sees no CUDA GPU '
                     'here; use --device cpu')
    if args.amp and device.type != 'cuda':
        raise _error(f'--amp {args.amp} uses mmengine\'s AmpOptimWrapper, '
                     'which runs on GPUs only; drop --amp or use --device '
                     'cuda')
    if args.amp == 'bf16' and not torch.cuda.is_bf16_supported():
        raise _error('this GPU has no bf16; use --amp fp16')
    return device


def hardware(device) -> str:
    """The GPU's name, or the CPU's and its core count."""
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    with contextlib.suppress(OSError), open('/proc/cpuinfo') as f:
        names = [ln.split(':')[1].strip() for ln in f if 'model name' in ln]
        return f'{names[0]} x {len(names)}' if names else platform.processor()
    return platform.processor()


def report(results: Dict) -> str:
    """The results as printed lines."""
    s = results['settings']
    lines = [
        f'device: {s["device"]} ({s["hardware"]}), torch {s["torch"]}, '
        f'{s["threads"]} threads',
        f'batch {s["batch_size"]}, input {s["input_size"]}, {s["iters"]} '
        f'timed steps after {s["warmup"]} warm-up, amp={s["amp"]}, '
        f'channels_last={s["channels_last"]}, compile={s["compile"]}, '
        f'HeapReuseHook={s["heap_reuse"]}',
        'load average before/after: ' + ' / '.join(
            ' '.join(f'{x:.2f}' for x in s[k])
            for k in ('load_before', 'load_after'))]
    for name, r in results['models'].items():
        lines.append(
            f'{name:>10}: median step {r["median_step_s"]:.4f} s (min '
            f'{r["min_step_s"]:.4f}, max {r["max_step_s"]:.4f}), '
            f'{r["images_per_s"]:.1f} img/s, peak memory '
            f'{r["peak_memory_bytes"] / 2**20:.0f} MiB, '
            f'{r["num_params"]:,} parameters')
    lines += [f'step time ratio ({name} / baseline): {r["ratio"]:.3f} (median '
              f'of the per-round ratios: {r["median_round_ratio"]:.3f})'
              for name, r in results['models'].items() if 'ratio' in r]
    if 'deployed_teacher' in results:
        lines.append(
            'deployed teacher: same module types as the baseline: '
            '{same_module_types}, same parameter shapes: '
            '{same_parameter_shapes}; inference {teacher_inference_s:.4f} s '
            'vs {baseline_inference_s:.4f} s, ratio {inference_ratio:.3f}'
            .format(**results['deployed_teacher']))
    return '\n'.join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    setup_step_tool(args.threads)
    device = check_device(args)

    # Every config is read and checked before the first model is built.
    cfg = load_config(args.config)
    base_cfg = load_config(args.baseline) if args.baseline else None
    variants = {n: variant_config(
        cfg, '--ablation' if args.ablation and n == 'plain' else
        f'--variant {n}', o) for n, o in args.variant}
    teacher_cfg = copy.deepcopy(cfg) if args.deployed_teacher else None
    if teacher_cfg is not None:
        try:
            teacher_cfg.model = stock_model_cfg(cfg.model)
        except DeployError as e:
            raise _error(f'--deployed-teacher: {e}')

    # Process-wide, as in training: a config's HeapReuseHook applies to
    # every model timed here.
    heap_reuse = reuse_as_declared(cfg) or (
        reuse_as_declared(base_cfg) if base_cfg is not None else None)
    runners = [Timed(n, c, args, device) for n, c in
               [('model', cfg), *variants.items(), ('baseline', base_cfg)]
               if c is not None]
    load_before = os.getloadavg()
    interleave(runners, args.warmup, args.iters)
    settings = dict(
        device=str(device), hardware=hardware(device),
        torch=torch.__version__, threads=torch.get_num_threads(),
        load_before=load_before, load_after=os.getloadavg(),
        batch_size=args.batch_size, input_size=list(input_size(cfg, 'train')),
        iters=args.iters, warmup=args.warmup, amp=args.amp,
        channels_last=args.channels_last, compile=args.compile,
        heap_reuse=heap_reuse, config=args.config, baseline=args.baseline,
        variants=dict(args.variant))
    base = runners[-1] if base_cfg is not None else None
    results = dict(settings=settings, models={
        r.name: dict(r.summary(args.batch_size, base), **r.peak_memory())
        for r in runners})
    del runners, base  # free their memory for the deployed teacher
    gc.collect()
    if teacher_cfg is not None:
        results['deployed_teacher'] = deployed_teacher(
            teacher_cfg, base_cfg, args, device)
    print(report(results))
    if args.out:
        with open(args.out, 'x') as f:  # 'x': never write over a result
            json.dump(results, f, indent=2)
    return 0


if __name__ == '__main__':
    sys.exit(main())
