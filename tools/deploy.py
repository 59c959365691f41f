"""Export the trained teacher of a TESKD model as a stock mmpretrain model.

    python tools/deploy.py CONFIG CHECKPOINT OUT_DIR [--overwrite]
        [--cfg-options KEY=VALUE ...] [--trust-checkpoint]

Writes OUT_DIR/<config>_deploy.py (backbone + GlobalAveragePooling +
LinearClsHead) and OUT_DIR/<config>_teacher.pth (the teacher's weights and
the training set's class names), which plain mmpretrain loads without this
package, e.g. ``mmpretrain.get_model(cfg_path, pretrained=ckpt_path)``. The
deployed config is the one the checkpoint was trained with (saved in it);
CONFIG, with --cfg-options, must agree with it on the model.
"""
import argparse
import sys

from mmengine.config import DictAction

from teskd_mm.utils.cli import add_trust_checkpoint, trust_if_asked


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='the TESKD training config')
    parser.add_argument('checkpoint', help='a checkpoint of that config')
    parser.add_argument('out_dir', help='where to write the stock model')
    parser.add_argument(
        '--overwrite',
        action='store_true',
        help='replace deployed files that already exist in OUT_DIR')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config, as key=value pairs')
    add_trust_checkpoint(parser)
    args = parser.parse_args(argv)
    trust_if_asked(args, args.checkpoint)
    from teskd_mm.apis import DeployError, deploy
    try:
        cfg_out, ckpt_out = deploy(args.config, args.checkpoint, args.out_dir,
                                   overwrite=args.overwrite,
                                   cfg_options=args.cfg_options)
    except DeployError as e:
        print(f'deploy: error: {e}', file=sys.stderr)
        return 2
    print(f'Wrote {cfg_out}\nWrote {ckpt_out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
