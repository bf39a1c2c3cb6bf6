"""The ``webda`` command line.

Each command lives in the module that implements it, which exposes
``add_parser(subparsers)``: it adds its sub-parser and sets ``func`` (called with the parsed
arguments, returns an exit status or None). :class:`webda.errors.UserError` raised by a
command is printed as one line, without a traceback, with exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# Set before torch is imported: idle OpenMP threads sleep instead of spinning, which on CPU
# cores shared with other processes starves the threads doing the work (the measurement is
# in the message of the commit that added this line: `git log -S OMP_WAIT_POLICY`). An
# OMP_WAIT_POLICY already in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from webda.errors import UserError  # noqa: E402

# Modules that each contribute one or more sub-commands, in the order `webda --help` lists them.
COMMAND_MODULES = [
    "webda.data.cli",
    "webda.train.cli",
    "webda.evaluate",
    "webda.demo",
    "webda.ablate",
    "webda.cli_check",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="webda",
        description="Image-to-video domain adaptation with web supervision (Kae & Song).",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(subparsers)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        status = args.func(args)
    except UserError as err:
        print(f"webda {args.command}: error: {err}", file=sys.stderr)
        return 2
    return int(status or 0)
