"""Where a training step's time goes, part by part, against its arithmetic.

    python tools/analysis/profile_step.py CONFIG [--batch-size 64]
        [--threads 2] [--warmup 2] [--steps 1] [--cfg-options KEY=VALUE ...]
        [--out PROFILE.json]

One ``model.train_step`` (data preprocessor, forward, loss, backward,
optimizer step, as ``tools/benchmark.py`` times it) runs under
``torch.profiler``. Each part of the model is a module: the backbone, each
child of the neck and of the head (each entry of a ``ModuleDict``, e.g.
``neck.upsamples.1``, on its own), the head's loss. Forward operators are
given to the innermost part that ran them; each backward operator to the
part whose forward operator created it (autograd's sequence number), so a
part's time is its forward plus its backward. Work a module does outside
its children (e.g. the neck's fused sums) counts for that module itself,
``neck (own)``. The multiply-accumulates are those of the convolutions and
matrix products the forward ran (the profiler's FLOPs / 2); the backward
does twice as many of each part's.

The table lists each part's share of the step's time against its share of
the multiply-accumulates; a part whose time share is well above its MAC
share spends its time on memory passes (norms, activations, sums, copies),
not arithmetic. Profiling slows small operators more than large ones: the
shares are what to compare, ``tools/benchmark.py`` gives the step time.
"""
import argparse
import copy
import os.path as osp
import sys
from collections import defaultdict
from typing import Dict, List, Optional

import torch
import torch.nn as nn
from mmengine.config import Config, DictAction
from mmengine.optim import build_optim_wrapper
from torch.autograd.profiler import record_function
from torch.profiler import ProfilerActivity, profile

from teskd_mm.hooks.heap_reuse_hook import reuse_as_declared
from teskd_mm.utils import ConfigCheckError, prepare_cfg, setup_step_tool
from teskd_mm.utils.cli import check_at_least, refuse_existing_out
from teskd_mm.utils.inputs import dummy_batch, input_size
from teskd_mm.utils.preflight.model import build_model

PROG = 'profile_step.py'
SCOPE = 'part::'
# Operators whose FLOPs are the multiply-accumulates of a layer.
MAC_OPS = ('aten::conv2d', 'aten::convolution', 'aten::addmm', 'aten::mm',
           'aten::bmm', 'aten::matmul', 'aten::linear')
BACKWARD = 'autograd::engine::evaluate_function: '
OTHER = 'rest (optimizer, glue)'


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse and check the command line."""
    p = argparse.ArgumentParser(
        prog=PROG, description='Profile one training step by model part')
    p.add_argument('config', help='config of the model to profile')
    p.add_argument('--batch-size', type=int, default=64)
    p.add_argument('--threads', type=int, help='torch CPU threads')
    p.add_argument('--warmup', type=int, default=2,
                   help='unprofiled steps first')
    p.add_argument('--steps', type=int, default=1,
                   help='profiled steps; the times are summed')
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='override settings of the config, as key=value pairs')
    p.add_argument('--out', help='also write the table to this new JSON')
    args = p.parse_args(argv)
    check_at_least(p, args, dict(batch_size=1, threads=1, warmup=0,
                                 steps=1))
    refuse_existing_out(p, args.out)
    return args


def model_parts(model: nn.Module) -> Dict[str, nn.Module]:
    """The parts to profile, by name: backbone, the neck's and head's
    children (``ModuleDict`` entries each), the neck and head themselves
    (for their own work) and the preprocessor."""
    parts = {'data_preprocessor': model.data_preprocessor}
    for name in ('backbone', 'neck', 'head'):
        module = getattr(model, name, None)
        if module is None:
            continue
        parts[name] = module
        if name == 'backbone':
            continue
        for child_name, child in module.named_children():
            if isinstance(child, nn.ModuleDict):
                for key, entry in child.items():
                    parts[f'{name}.{child_name}.{key}'] = entry
            else:
                parts[f'{name}.{child_name}'] = child
    return parts


def scope_parts(parts: Dict[str, nn.Module]) -> List:
    """Open a profiler scope around every forward call of each part."""
    handles = []
    for name, module in parts.items():
        stack = []

        def enter(mod, inputs, name=name, stack=stack):
            stack.append(record_function(SCOPE + name))
            stack[-1].__enter__()

        def leave(mod, inputs, outputs, stack=stack):
            stack.pop().__exit__(None, None, None)

        handles += [module.register_forward_pre_hook(enter),
                    module.register_forward_hook(leave)]
    return handles


def _part_of(event) -> Optional[str]:
    while event is not None:
        if event.name.startswith(SCOPE):
            return event.name[len(SCOPE):]
        event = event.cpu_parent
    return None


def _under(event, names) -> bool:
    event = event.cpu_parent
    while event is not None:
        if event.name in names or event.name.startswith(BACKWARD):
            return True
        event = event.cpu_parent
    return False


def attribute(events) -> Dict[str, Dict[str, float]]:
    """Forward and backward time (us) and forward MACs per part.

    Args:
        events: ``prof.events()`` of the profiled steps.
    """
    table = defaultdict(lambda: dict(forward_us=0., backward_us=0., macs=0.))
    seq_part, step_us = {}, 0.
    for e in events:
        if e.name == SCOPE + 'step':
            step_us += e.cpu_time_total
        elif e.name.startswith(SCOPE):
            # A part's own forward time: its scope less its sub-parts'.
            inner = [c for c in e.cpu_children if c.name.startswith(SCOPE)]
            name = e.name[len(SCOPE):]
            table[name]['forward_us'] += e.cpu_time_total - sum(
                c.cpu_time_total for c in inner)
        elif not _under(e, ()):
            part = _part_of(e)
            if e.sequence_nr >= 0:
                seq_part.setdefault(
                    (e.fwd_thread or e.thread, e.sequence_nr), part)
            # The profiler gives FLOPs on one level of each call chain
            # (aten::conv2d, aten::addmm under aten::linear), also inside
            # custom autograd functions, whose ops have no sequence number.
            if e.name in MAC_OPS and e.flops and part:
                table[part]['macs'] += e.flops / 2
    for e in events:
        if e.name.startswith(BACKWARD) and not _under(e, ()):
            part = seq_part.get((e.fwd_thread or e.thread, e.sequence_nr))
            if part is None or part == 'step':
                part = OTHER  # gradient accumulation, code between parts
            table[part]['backward_us'] += e.cpu_time_total
    # Sub-part scopes nest inside e.g. 'neck': recount 'step' as the rest.
    counted = sum(v['forward_us'] + v['backward_us']
                  for k, v in table.items() if k != 'step')
    table.pop('step', None)
    table[OTHER]['forward_us'] += max(0., step_us - counted)
    return dict(table)


def render(table: Dict[str, Dict[str, float]], steps: int) -> str:
    """The table as text, parts in the model's order."""
    total_t = sum(v['forward_us'] + v['backward_us'] for v in table.values())
    total_m = sum(v['macs'] for v in table.values()) or 1.
    lines = [f'{"part":<28} {"fwd ms":>9} {"bwd ms":>9} {"time %":>7} '
             f'{"GMAC":>8} {"MAC %":>7} {"time/MAC":>8}']
    for name, v in table.items():
        t = v['forward_us'] + v['backward_us']
        share_t, share_m = 100 * t / total_t, 100 * v['macs'] / total_m
        ratio = f'{share_t / share_m:8.2f}' if share_m >= 0.05 else f'{"-":>8}'
        lines.append(
            f'{name:<28} {v["forward_us"] / 1e3 / steps:9.1f} '
            f'{v["backward_us"] / 1e3 / steps:9.1f} {share_t:7.1f} '
            f'{v["macs"] / 1e9 / steps:8.2f} {share_m:7.1f} {ratio}')
    lines.append(f'{"total":<28} {total_t / 1e3 / steps:>19.1f} {100:7.1f} '
                 f'{total_m / 1e9 / steps:8.2f} {100:7.1f}')
    return '\n'.join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    setup_step_tool(args.threads)
    if not osp.isfile(args.config):
        raise SystemExit(f'{PROG}: error: config {args.config} does not '
                         'exist')
    cfg = prepare_cfg(Config.fromfile(args.config))
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    try:
        model = build_model(cfg)
    except ConfigCheckError as e:
        raise SystemExit(f'{PROG}: error: {e}')
    heap_reuse = reuse_as_declared(cfg)  # as the Runner's hook would
    torch.manual_seed(0)
    model.init_weights()
    model.train()
    wrapper = build_optim_wrapper(model, copy.deepcopy(cfg.optim_wrapper))
    torch.manual_seed(1)
    batch = dummy_batch(cfg, 'train', args.batch_size)
    for _ in range(args.warmup):
        model.train_step(batch, wrapper)

    handles = scope_parts(model_parts(model))
    with profile(activities=[ProfilerActivity.CPU], with_flops=True,
                 record_shapes=True) as prof:
        for _ in range(args.steps):
            with record_function(SCOPE + 'step'):
                model.train_step(batch, wrapper)
    for h in handles:
        h.remove()
    table = attribute(prof.events())
    print(f'{args.config}: batch {args.batch_size}, input '
          f'{tuple(input_size(cfg, "train"))}, {torch.get_num_threads()} '
          f'threads, HeapReuseHook={heap_reuse}, {args.steps} profiled '
          'step(s), per step:')
    print(render(table, args.steps))
    if args.out:
        import json
        with open(args.out, 'x') as f:
            json.dump(dict(config=args.config, batch_size=args.batch_size,
                           steps=args.steps, parts=table), f, indent=2)
    return 0


if __name__ == '__main__':
    sys.exit(main())
