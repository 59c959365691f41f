"""Checks of the command lines of the tools, worded one way for all."""
import argparse
import os.path as osp
from typing import Dict


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
    """Refuse an ``--out`` file that exists: results are never written
    over."""
    if path and osp.exists(path):
        parser.error(f'--out {path} already exists; name a new file '
                     '(results are never written over)')
