"""Write the TESKD (or DTSKD) config of any mmpretrain classifier config.

    python tools/teskd_config.py BASE_CONFIG OUT_CONFIG [--method dtskd]
        [--width N] [--weights cifar|imagenet] [--students 1,2,3]
        [--overwrite]

BASE_CONFIG is a path or ``mmpretrain::<path>``. The stock model is built
and run once at the config's input size; OUT_CONFIG inherits BASE_CONFIG
and states only what TESKD changes (the backbone's out_indices, the neck,
the head and loss, the evaluator, the reliability hooks), with a comment per
inferred value. Nothing is written unless the TESKD model trains a step and
the teacher it deploys is exactly the stock network.
"""
import argparse
import os.path as osp
import sys

from teskd_mm.utils.cli import check_at_least, check_output


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('base', help='a classifier config (path or '
                        'mmpretrain::<path>)')
    parser.add_argument('out', help='the TESKD config to write')
    parser.add_argument(
        '--method', choices=['teskd', 'dtskd'], default='teskd',
        help='the self-distillation method (default: teskd)')
    parser.add_argument(
        '--width', type=int,
        help='the fused width (the neck\'s out_channels); default: the last '
        'stage\'s, as in the paper; smaller for wide backbones')
    parser.add_argument(
        '--weights', choices=['cifar', 'imagenet'],
        help='the loss weights of the paper\'s CIFAR (CE 0.2, KD 0.8) or '
        'ImageNet (0.8, 0.2) recipe; default: by the input size (up to '
        '64 px: CIFAR)')
    parser.add_argument(
        '--students', default='1,2,3',
        help='the student levels, comma-separated (default: 1,2,3)')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace OUT_CONFIG if it exists')
    args = parser.parse_args(argv)
    check_at_least(parser, args, dict(width=1))
    check_output(parser, 'OUT_CONFIG', args.out)
    if osp.exists(args.out) and not args.overwrite:
        parser.error(f'{args.out} exists; pass --overwrite to replace it')
    try:
        students = tuple(int(s) for s in args.students.split(','))
    except ValueError:
        parser.error(f'--students {args.students!r} is not a list of levels '
                     'such as 1,2,3')
    from teskd_mm.apis.teskd_config import write_teskd_config
    try:
        plan = write_teskd_config(args.base, args.out, args.width,
                                  args.weights, students, args.method)
    except ValueError as e:  # TeskdConfigError and the components' own
        print(f'teskd_config: error: {e}', file=sys.stderr)
        return 2
    for key, why in plan['why'].items():
        print(f'{key}: {why}')
    print(f'Wrote {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
