"""Time the full training step of a model against a baseline, interleaved.

    python tools/benchmark.py CONFIG [--baseline CONFIG] [--batch-size 64]
        [--iters 20] [--warmup 3] [--threads 2] [--device cpu|cuda]
        [--amp bf16|fp16] [--channels-last] [--compile]
        [--ablation] [--deployed-teacher]
        [--data-loading [--data-root PATH]] [--out RESULT.json]

Both models are built from their configs in one process. A training step is
what the Runner runs each iteration, ``model.train_step(data, optim_wrapper)``:
data preprocessor, forward, loss, backward and the optimizer step of the
config's ``optim_wrapper``. The steps of the two models alternate (A B, B A,
...) after the warm-up, so a change of machine load hits both alike; the
median step time of each, their ratio, images per second and the peak memory
of one step are printed. Inputs are random images of the config's crop size,
as the data loader would hand them over (a list of uint8 tensors).

``--ablation`` adds the same TESKD model with its speed rewrites switched on
one at a time, starting from a plain transcription of the method, to the
interleaved rounds.

``--deployed-teacher`` also times inference of the teacher exactly as
``tools/deploy.py`` exports it (a stock ``ImageClassifier``) against the
baseline model, and checks that both are built from the same module types.

``--data-loading`` measures the images per second of the config's training
pipeline with its ``num_workers``. CIFAR-100 is not assumed to be on disk:
CIFAR-10 JPEG images stand in, once decoded and held in memory as the CIFAR
data sets hold theirs (the config's transforms as they are), and once read
from the files (``LoadImageFromFile`` in front, a ``CustomDataset``).
"""
import argparse
import contextlib
import copy
import ctypes
import gc
import json
import logging
import os
import os.path as osp
import platform
import shutil
import statistics
import sys
import tarfile
import tempfile
import time
import types
from typing import Callable, Dict, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEFAULT_DATA = osp.join(ROOT, '..', 'shared', 'data', 'cifar10-jpg.tar.gz')
AMP_DTYPES = {'bf16': 'bfloat16', 'fp16': 'float16'}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Time training steps of a model against a baseline')
    parser.add_argument('config', help='config of the model to time')
    parser.add_argument(
        '--baseline', help='config of the model to compare with')
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument(
        '--iters', type=int, default=20,
        help='timed steps of each model (after the warm-up)')
    parser.add_argument(
        '--warmup', type=int, default=3, help='untimed steps of each model')
    parser.add_argument(
        '--threads', type=int, default=None,
        help='torch CPU threads (default: torch\'s own choice)')
    parser.add_argument('--device', default='cpu', help='cpu, cuda, cuda:1')
    parser.add_argument(
        '--amp', choices=sorted(AMP_DTYPES),
        help='automatic mixed precision, as the Runner\'s AmpOptimWrapper')
    parser.add_argument(
        '--channels-last', action='store_true',
        help='models and inputs in the channels_last memory format')
    parser.add_argument(
        '--compile', action='store_true',
        help='torch.compile the train_step, as the Runner\'s cfg.compile')
    parser.add_argument(
        '--input-size', type=int, default=None,
        help='square input size (default: the crop size of the config\'s '
        'training pipeline)')
    parser.add_argument(
        '--ablation', action='store_true',
        help='also time CONFIG with its speed rewrites switched on one by '
        'one, from a plain transcription of the method (TESKD models)')
    parser.add_argument(
        '--deployed-teacher', action='store_true',
        help='also time inference of the deployed teacher of CONFIG '
        'against the baseline')
    parser.add_argument(
        '--data-loading', action='store_true',
        help='also measure the training pipeline\'s images per second')
    parser.add_argument(
        '--data-root', default=DEFAULT_DATA,
        help='cifar10-jpg.tar.gz or a folder in CustomDataset layout, for '
        '--data-loading')
    parser.add_argument(
        '--data-batches', type=int, default=30,
        help='timed batches for --data-loading')
    parser.add_argument(
        '--data-workers', type=int, default=None,
        help='worker count for --data-loading (default: the config\'s)')
    parser.add_argument('--out', help='also write the results to this JSON')
    args = parser.parse_args(argv)
    for name in ('batch_size', 'iters', 'data_batches'):
        if getattr(args, name) < 1:
            parser.error(f'--{name.replace("_", "-")} must be at least 1, '
                         f'got {getattr(args, name)}')
    if args.warmup < 0:
        parser.error(f'--warmup must be 0 or more, got {args.warmup}')
    if args.threads is not None and args.threads < 1:
        parser.error(f'--threads must be at least 1, got {args.threads}')
    if args.data_loading and not osp.exists(args.data_root):
        parser.error(f'--data-root {args.data_root} does not exist; give '
                     'the path of cifar10-jpg.tar.gz (see '
                     '../shared/data/README.md) or of a folder with '
                     'train/<class>/*.jpg')
    if args.out and osp.exists(args.out):
        parser.error(f'--out {args.out} already exists; name a new file '
                     '(results are never written over)')
    for flag in ('deployed_teacher', 'ablation'):
        if getattr(args, flag) and not args.baseline:
            parser.error(f'--{flag.replace("_", "-")} compares with the '
                         'baseline; give --baseline CONFIG too')
    return args


# ----------------------------------------------------------------- memory
def _proc_status_kib(field: str) -> Optional[int]:
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith(field + ':'):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class CpuPeakMemory:
    """Peak resident memory of a stretch of code, in bytes.

    Freed heap is handed back to the system first (``malloc_trim``) and the
    kernel's high-water mark is reset (``/proc/self/clear_refs``), so the
    figure is what the code itself needed on top of what was resident.
    Where that reset is not possible, it falls back to ``ru_maxrss``, which
    only ever grows, and says so in :attr:`method`.
    """

    def __init__(self) -> None:
        try:
            self._libc = ctypes.CDLL('libc.so.6')
        except OSError:
            self._libc = None
        self.method = 'VmHWM after clear_refs'

    def __enter__(self) -> 'CpuPeakMemory':
        gc.collect()
        if self._libc is not None:
            self._libc.malloc_trim(0)
        try:
            with open('/proc/self/clear_refs', 'w') as f:
                f.write('5')
            self._start = _proc_status_kib('VmRSS')
            self._hwm = True
        except OSError:
            import resource
            self.method = 'ru_maxrss (monotonic; an upper bound)'
            self._start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            self._hwm = False
        return self

    def __exit__(self, *exc) -> None:
        if self._hwm:
            peak = _proc_status_kib('VmHWM')
        else:
            import resource
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.peak = max(0, peak - self._start) * 1024


# ----------------------------------------------------------------- models
def load_config(path: str):
    from mmengine.config import Config
    if not osp.isfile(path):
        raise SystemExit(f'benchmark: error: config {path} does not exist')
    cfg = Config.fromfile(path)
    from teskd_mm.utils import prepare_cfg
    return prepare_cfg(cfg)


def input_size_of(cfg, given: Optional[int]) -> int:
    """The square crop the training pipeline produces."""
    if given is not None:
        return given
    pipeline = cfg.get('train_pipeline') or \
        cfg.train_dataloader.dataset.get('pipeline', [])
    for t in pipeline:
        for key in ('crop_size', 'scale'):
            size = t.get(key)
            if isinstance(size, int):
                return size
            if isinstance(size, (tuple, list)) and size[0] == size[-1]:
                return int(size[0])
    raise SystemExit(
        'benchmark: error: found no square crop in the training pipeline of '
        f'{cfg.filename}; give --input-size (e.g. 32 for CIFAR, 224 for '
        'ImageNet)')


def num_classes_of(cfg) -> int:
    return int(cfg.model.head.num_classes)


def build_model(model_cfg: dict, device, channels_last: bool):
    from mmpretrain.registry import MODELS
    model = MODELS.build(copy.deepcopy(model_cfg))
    model.init_weights()
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def build_optim_wrapper(model, cfg, amp: Optional[str]):
    from mmengine.optim import build_optim_wrapper as build
    optim_cfg = copy.deepcopy(cfg.optim_wrapper)
    if amp:
        # What tools/train.py --amp does, with the chosen dtype.
        optim_cfg['type'] = 'AmpOptimWrapper'
        optim_cfg['dtype'] = AMP_DTYPES[amp]
        optim_cfg.setdefault('loss_scale', 'dynamic')
    return build(model, optim_cfg)


def make_batch(batch_size: int, size: int, num_classes: int, seed: int):
    """Random images and labels as the data loader hands them over."""
    from mmpretrain.structures import DataSample
    gen = torch.Generator().manual_seed(seed)
    inputs = [
        torch.randint(0, 256, (3, size, size), dtype=torch.uint8,
                      generator=gen) for _ in range(batch_size)
    ]
    labels = torch.randint(0, num_classes, (batch_size, ), generator=gen)
    samples = [DataSample().set_gt_label(int(y)) for y in labels]
    return dict(inputs=inputs, data_samples=samples)


class Trainee:
    """One model, its optimizer wrapper, a batch and its timings."""

    def __init__(self, name: str, cfg, args, device,
                 variant: Optional[dict] = None) -> None:
        self.name = name
        self.cfg = cfg
        self.model = build_model(cfg.model, device, args.channels_last)
        if variant is not None:
            apply_variant(self.model, variant)
        self.model.train()
        self.optim_wrapper = build_optim_wrapper(self.model, cfg, args.amp)
        self.batch = make_batch(args.batch_size,
                                input_size_of(cfg, args.input_size),
                                num_classes_of(cfg), seed=0)
        self.train_step: Callable = self.model.train_step
        if args.compile:
            import torch
            self.train_step = torch.compile(self.model.train_step)
        self.times: List[float] = []
        self.num_params = sum(p.numel() for p in self.model.parameters())

    def step(self, sync: Callable) -> float:
        start = time.perf_counter()
        self.train_step(self.batch, self.optim_wrapper)
        sync()
        return time.perf_counter() - start


# --------------------------------------------------------------- ablation
# The TESKD modules as a plain transcription of the method; --ablation
# swaps them in, per model instance, to show what each rewrite buys.
def _upsample_interpolate_first(self, x):
    x = F.interpolate(x, scale_factor=2, mode='bilinear', align_corners=True)
    return self.conv(x)


def _upsample_conv_first(self, x):
    """The 1x1 conv before the interpolation, in the input's format."""
    c = self.conv
    x = F.interpolate(
        c.conv(x), scale_factor=2, mode='bilinear', align_corners=True)
    return c.activate(c.norm(x))


def _branch_convs(self, x):
    feat = F.adaptive_avg_pool2d(self.mix(self.reduce(x)), 1).flatten(1)
    return feat, self.fc(feat)


def _neck_concat(self, inputs):
    """Mixed fusion with the concatenation, in the backbone's format."""
    from teskd_mm.models.necks.mfm_neck import MFMOutput
    s, fused = self.lateral_top(inputs[-1]), {}
    for b in reversed(self.levels):
        u = self.upsamples[str(b)](s)
        lat = self.laterals[str(b)](inputs[b - 1])
        s = fused[b] = self.fuses[str(b)](torch.cat([u + lat, u], dim=1))
    return MFMOutput(inputs[-1], tuple(fused[b] for b in self.students),
                     self.students)


ABLATION = (
    ('straightforward',
     dict(upsample=_upsample_interpolate_first, branch=_branch_convs,
          neck=_neck_concat)),
    ('+upsample conv first',
     dict(upsample=_upsample_conv_first, branch=_branch_convs,
          neck=_neck_concat)),
    ('+patchify branches',
     dict(upsample=_upsample_conv_first, neck=_neck_concat)),
    ('+channels_last upsample', dict(neck=_neck_concat)),
    # 'model' itself: + channels_last laterals, fuse without the concat.
    ('model, ReLU not in place', dict(relu_inplace=False)),
)


def apply_variant(model, variant: dict) -> None:
    """Swap in the plain forwards that ``variant`` names."""
    from teskd_mm.models.heads.multi_branch_cls_head import StudentBranch
    from teskd_mm.models.necks.mfm_neck import MFMNeck, Upsample
    targets = dict(upsample=Upsample, branch=StudentBranch, neck=MFMNeck)
    found = set()
    for m in model.modules():
        for key, cls in targets.items():
            if type(m) is cls and key in variant:
                if key == 'neck' and m.fusion != 'mixed':
                    raise SystemExit(
                        'benchmark: error: --ablation needs the paper\'s '
                        f'mixed fusion, but the neck has fusion={m.fusion!r}')
                m.forward = types.MethodType(variant[key], m)
                found.add(key)
        if isinstance(m, nn.ReLU) and variant.get('relu_inplace') is False:
            m.inplace = False
    missing = set(variant) - found - {'relu_inplace'}
    if missing:
        raise SystemExit(
            'benchmark: error: --ablation times TESKD models (MFMNeck, '
            f'Upsample, StudentBranch); the config has no {sorted(missing)}')


def interleave(runners: List, steps: int, record: bool,
               sync: Callable) -> None:
    """Alternate the runners' steps, reversing the order every round."""
    for i in range(steps):
        order = runners if i % 2 == 0 else runners[::-1]
        for r in order:
            t = r.step(sync)
            if record:
                r.times.append(t)


def peak_memory(runner, device, sync: Callable) -> Dict:
    """Peak memory of one more (untimed) step of ``runner``."""
    if device.type == 'cuda':
        sync()
        torch.cuda.reset_peak_memory_stats(device)
        runner.step(sync)
        return dict(peak_memory_bytes=torch.cuda.max_memory_allocated(device),
                    memory_method='torch.cuda.max_memory_allocated')
    with CpuPeakMemory() as mem:
        runner.step(sync)
    return dict(peak_memory_bytes=mem.peak,
                memory_method='peak RSS increase during one step, '
                f'{mem.method}')


# ---------------------------------------------------------- deployed model
def module_types(model) -> List[str]:
    return [f'{type(m).__module__}.{type(m).__qualname__}'
            for m in model.modules()]


def time_inference(models: Dict[str, object], batch, iters: int,
                   warmup: int, sync: Callable, device,
                   amp: Optional[str]) -> Dict[str, float]:
    """Median inference time of each model, interleaved."""
    times = {name: [] for name in models}
    names = list(models)
    autocast = torch.autocast(device.type, getattr(torch, AMP_DTYPES[amp])) \
        if amp else contextlib.nullcontext()
    with torch.inference_mode(), autocast:
        for i in range(warmup + iters):
            for name in (names if i % 2 == 0 else names[::-1]):
                model = models[name]
                start = time.perf_counter()
                data = model.data_preprocessor(batch, False)
                model(data['inputs'], mode='tensor')
                sync()
                if i >= warmup:
                    times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def deployed_teacher(cfg, base_cfg, args, device, sync) -> Dict:
    from teskd_mm.apis.deploy import stock_model_cfg
    teacher = build_model(stock_model_cfg(cfg.model), device,
                          args.channels_last).eval()
    base = build_model(base_cfg.model, device, args.channels_last).eval()
    same = module_types(teacher) == module_types(base)
    shapes_same = [tuple(v.shape) for v in teacher.state_dict().values()] == \
        [tuple(v.shape) for v in base.state_dict().values()]
    batch = make_batch(args.batch_size, input_size_of(cfg, args.input_size),
                       num_classes_of(cfg), seed=1)
    med = time_inference(dict(teacher=teacher, baseline=base), batch,
                         args.iters, args.warmup, sync, device, args.amp)
    return dict(
        same_module_types=same,
        same_parameter_shapes=shapes_same,
        teacher_inference_s=med['teacher'],
        baseline_inference_s=med['baseline'],
        inference_ratio=med['teacher'] / med['baseline'])


# ------------------------------------------------------------ data loading
def cifar_jpeg_folder(src: str, min_images: int, tmp: str) -> str:
    """A CustomDataset folder with at least ``min_images`` training images."""
    if osp.isdir(src):
        if not osp.isdir(osp.join(src, 'train')):
            raise SystemExit(
                f'benchmark: error: {src} has no train/ folder; give '
                '--data-root the cifar10-jpg folder (train/<class>/*.jpg) '
                'or cifar10-jpg.tar.gz')
        return src
    if not osp.isfile(src):
        raise SystemExit(
            f'benchmark: error: --data-root {src} does not exist; give the '
            'path of cifar10-jpg.tar.gz (see ../shared/data/README.md) or '
            'of its extracted folder')
    per_class = -(-min_images // 10)
    with tarfile.open(src) as tar:
        for member in tar:
            parts = member.name.split('/')
            if len(parts) != 4 or parts[1] != 'train' or \
                    not member.isfile():
                continue
            if int(osp.splitext(parts[3])[0]) >= per_class:
                continue
            out = osp.join(tmp, 'train', parts[2], parts[3])
            os.makedirs(osp.dirname(out), exist_ok=True)
            with tar.extractfile(member) as f, open(out, 'wb') as g:
                shutil.copyfileobj(f, g)
    return tmp


def decoded_images(root: str, pipeline: List[dict]):
    """The images under ``root/train`` decoded once and held in memory.

    This is how mmpretrain's CIFAR data sets hand images to the pipeline
    (arrays in the serialised data list, no file reading or decoding).
    """
    import mmcv
    from mmengine.dataset import BaseDataset

    train = osp.join(root, 'train')
    classes = sorted(os.listdir(train))
    data = [
        dict(img=mmcv.imread(osp.join(train, c, f), channel_order='rgb'),
             gt_label=i) for i, c in enumerate(classes)
        for f in sorted(os.listdir(osp.join(train, c)))
    ]

    class DecodedImages(BaseDataset):

        def load_data_list(self):
            return data

    return DecodedImages(pipeline=pipeline)


def loader_rate(loader_cfg: dict, dataset, batches: int,
                batch_size: int) -> float:
    """Images per second of a data loader, after its first two batches."""
    from mmengine.runner import Runner
    loader = Runner.build_dataloader(dict(loader_cfg, dataset=dataset),
                                     seed=0)
    if len(loader) < batches + 2:
        raise SystemExit(
            f'benchmark: error: --data-root holds {len(loader.dataset)} '
            f'training images, too few for {batches + 2} batches of '
            f'{batch_size}; lower --data-batches or --batch-size')
    it = iter(loader)
    for _ in range(2):  # worker start-up
        next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    elapsed = time.perf_counter() - start
    del it
    return batches * batch_size / elapsed


def data_loading(cfg, args) -> Dict:
    """Images per second of the config's training pipeline.

    Measured twice over CIFAR-10 images: held decoded in memory, as the CIFAR
    data sets hold theirs, with the config's transforms as they are; and
    read from JPEG files (``LoadImageFromFile`` in front), as a folder data
    set of such images would be.
    """
    loader_cfg = copy.deepcopy(cfg.train_dataloader.to_dict())
    workers = loader_cfg.get('num_workers', 0) \
        if args.data_workers is None else args.data_workers
    transforms = [
        t for t in loader_cfg.pop('dataset').get('pipeline', [])
        if t.get('type') != 'LoadImageFromFile'
    ]
    loader_cfg.update(
        batch_size=args.batch_size,
        num_workers=workers,
        persistent_workers=False,
        sampler=dict(type='DefaultSampler', shuffle=True))
    need = (args.data_batches + 2) * args.batch_size
    with tempfile.TemporaryDirectory(prefix='benchmark_data_') as tmp:
        root = cifar_jpeg_folder(args.data_root, need, tmp)
        in_memory = loader_rate(loader_cfg,
                                decoded_images(root, transforms),
                                args.data_batches, args.batch_size)
        jpeg = loader_rate(
            loader_cfg,
            dict(type='CustomDataset', data_root=root, data_prefix='train',
                 pipeline=[dict(type='LoadImageFromFile')] + transforms),
            args.data_batches, args.batch_size)
    return dict(
        in_memory_images_per_s=in_memory,
        jpeg_images_per_s=jpeg,
        num_workers=workers,
        transforms=[t['type'] for t in transforms],
        source='CIFAR-10 images (CIFAR-100 is not on this machine)')


# ------------------------------------------------------------------- main
def environment(device) -> Dict:
    info = dict(
        torch=torch.__version__,
        device=str(device),
        threads=torch.get_num_threads(),
        python=platform.python_version())
    if device.type == 'cuda':
        info['gpu'] = torch.cuda.get_device_name(device)
    else:
        try:
            with open('/proc/cpuinfo') as f:
                names = [ln.split(':', 1)[1].strip() for ln in f
                         if ln.startswith('model name')]
            info['cpu'] = f'{names[0]} x {len(names)}' if names else None
        except OSError:
            info['cpu'] = platform.processor()
    return info


def check_device(args):
    try:
        device = torch.device(args.device)
    except RuntimeError:
        raise SystemExit(f'benchmark: error: --device {args.device!r} is not '
                         'a torch device; use cpu or cuda')
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise SystemExit(
            f'benchmark: error: --device {args.device} but torch sees no '
            'CUDA GPU here; use --device cpu')
    if args.amp and device.type != 'cuda':
        raise SystemExit(
            f'benchmark: error: --amp {args.amp} uses mmengine\'s '
            'AmpOptimWrapper, which runs on GPUs only; drop --amp or use '
            '--device cuda')
    if args.amp == 'bf16' and not torch.cuda.is_bf16_supported():
        raise SystemExit('benchmark: error: this GPU has no bf16; use --amp '
                         'fp16')
    return device


def fmt_mib(n: int) -> str:
    return f'{n / 2**20:.0f} MiB'


def report(results: Dict) -> str:
    lines = [
        'device: {device} ({hw}), torch {torch}, {threads} threads'.format(
            hw=results['env'].get('gpu') or results['env'].get('cpu'),
            **results['env']),
        'batch {batch_size}, input {input_size}, {iters} timed steps after '
        '{warmup} warm-up, amp={amp}, channels_last={channels_last}, '
        'compile={compile}'.format(**results['settings']),
        'load average before/after: {} / {}'.format(
            *(' '.join(f'{x:.2f}' for x in results[k])
              for k in ('load_before', 'load_after'))),
    ]
    for name, r in results['models'].items():
        lines.append(
            f'{name:>24}: median step {r["median_step_s"]:.4f} s '
            f'(min {r["min_step_s"]:.4f}, max {r["max_step_s"]:.4f}), '
            f'{r["images_per_s"]:.1f} img/s, peak memory '
            f'{fmt_mib(r["peak_memory_bytes"])}, '
            f'{r["num_params"]:,} parameters')
    for name, r in results['models'].items():
        if 'ratio' in r:
            lines.append(f'step time ratio ({name} / baseline): '
                         f'{r["ratio"]:.3f} (median of the per-round '
                         f'ratios: {r["median_round_ratio"]:.3f})')
    dep = results.get('deployed_teacher')
    if dep:
        lines.append(
            f'deployed teacher: same module types as the baseline: '
            f'{dep["same_module_types"]}, same parameter shapes: '
            f'{dep["same_parameter_shapes"]}; inference '
            f'{dep["teacher_inference_s"]:.4f} s vs '
            f'{dep["baseline_inference_s"]:.4f} s, ratio '
            f'{dep["inference_ratio"]:.3f}')
    data = results.get('data_loading')
    if data:
        lines.append(
            f'data loading with {data["num_workers"]} workers, '
            f'{data["source"]}: {data["in_memory_images_per_s"]:.0f} img/s '
            'from decoded images in memory (as the CIFAR data sets), '
            f'{data["jpeg_images_per_s"]:.0f} img/s from JPEG files; '
            'training step: ' + ', '.join(
                f'{n} {r["images_per_s"]:.1f} img/s'
                for n, r in results['models'].items()))
    return '\n'.join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    from teskd_mm.utils import setup_runtime
    setup_runtime()
    from mmengine.logging import MMLogger
    from mmengine.registry import init_default_scope
    init_default_scope('mmpretrain')
    # init_weights logs every parameter; only the results matter here.
    MMLogger.get_current_instance().setLevel(logging.WARNING)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = check_device(args)

    def sync():
        if device.type == 'cuda':
            torch.cuda.synchronize(device)

    cfg = load_config(args.config)
    base_cfg = load_config(args.baseline) if args.baseline else None
    torch.manual_seed(0)
    runners = [Trainee('model', cfg, args, device)]
    if args.ablation:
        for name, variant in ABLATION:
            torch.manual_seed(0)
            runners.append(Trainee(name, cfg, args, device, variant))
    if base_cfg is not None:
        runners.append(Trainee('baseline', base_cfg, args, device))

    load_before = os.getloadavg()
    interleave(runners, args.warmup, record=False, sync=sync)
    interleave(runners, args.iters, record=True, sync=sync)
    load_after = os.getloadavg()

    results = dict(
        env=environment(device),
        settings=dict(
            batch_size=args.batch_size,
            input_size=input_size_of(cfg, args.input_size),
            iters=args.iters,
            warmup=args.warmup,
            amp=args.amp,
            channels_last=args.channels_last,
            compile=args.compile,
            config=args.config,
            baseline=args.baseline),
        load_before=load_before,
        load_after=load_after,
        models={})
    for r in runners:
        med = statistics.median(r.times)
        results['models'][r.name] = dict(
            median_step_s=med,
            min_step_s=min(r.times),
            max_step_s=max(r.times),
            step_times_s=r.times,
            images_per_s=args.batch_size / med,
            num_params=r.num_params,
            **peak_memory(r, device, sync))
    if base_cfg is not None:
        base = runners[-1].times
        for r in runners[:-1]:
            res = results['models'][r.name]
            res['ratio'] = res['median_step_s'] / statistics.median(base)
            # Each round's steps ran back to back, under the same load.
            res['median_round_ratio'] = statistics.median(
                m / b for m, b in zip(r.times, base))
        results['ratio'] = results['models']['model']['ratio']
        results['median_round_ratio'] = \
            results['models']['model']['median_round_ratio']
    del runners
    gc.collect()
    if args.deployed_teacher:
        results['deployed_teacher'] = deployed_teacher(
            cfg, base_cfg, args, device, sync)
    if args.data_loading:
        results['data_loading'] = data_loading(cfg, args)
    print(report(results))
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == '__main__':
    sys.exit(main())
