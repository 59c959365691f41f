"""Checks of the command lines of the tools, worded one way for all."""
import argparse
import os.path as osp
from typing import Dict, Optional

from .checkpoint import trust_checkpoint
from .outputs import output_problem


def check_at_least(parser: argparse.ArgumentParser,
                   args: argparse.Namespace, limits: Dict[str, int]) -> None:
    """Refuse numeric options below their least value, naming both.

    Args:
        parser (ArgumentParser): Reports the error and exits.
        args (Namespace): The parsed command line.
        limits (dict): ``{dest: least value}``; options left unset (None)
            are not checked.
    """
    for name, low in limits.items():
        value = getattr(args, name)
        if value is not None and value < low:
            parser.error(f'--{name.replace("_", "-")} must be at least '
                         f'{low}, got {value}')


def refuse_existing_out(parser: argparse.ArgumentParser,
                        path: str) -> None:
    """Refuse an ``--out`` file that exists (results are never written
    over) or cannot be written."""
    if path and osp.exists(path) and not osp.isdir(path):
        parser.error(f'--out {path} already exists; name a new file '
                     '(results are never written over)')
    check_output(parser, '--out', path)


def check_output(parser: argparse.ArgumentParser, option: str,
                 path: Optional[str], folder: bool = False) -> None:
    """Refuse an output the tool could not write, before its work.

    Args:
        parser (ArgumentParser): Reports the error and exits.
        option (str): How the command line names the output.
        path (str, optional): The file (or ``folder``); None is not
            checked.
        folder (bool): ``path`` is a folder to write into.
    """
    problem = output_problem(path, folder) if path else None
    if problem:
        parser.error(f'{option} {path} {problem}; choose another')


def add_trust_checkpoint(parser: argparse.ArgumentParser) -> None:
    """The opt-in that loads the tool's checkpoint with full unpickling."""
    parser.add_argument(
        '--trust-checkpoint',
        action='store_true',
        help='load the checkpoint even if it holds types beyond what '
        'mmengine\'s checkpoints hold; unpickling them can run code from '
        'the file, so only for a file you trust')


def trust_if_asked(args: argparse.Namespace, path: str) -> None:
    """Trust ``path`` when the command line says ``--trust-checkpoint``."""
    if getattr(args, 'trust_checkpoint', False) and path:
        # Local: this module is read before the package is imported.
        trust_checkpoint(path)
