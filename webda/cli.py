"""The ``webda`` command line.

Each command lives in the module that implements it, which exposes
``add_parser(subparsers)``: it adds its sub-parser and sets ``func`` (called with the parsed
arguments, returns an exit status or None).

Bad input is answered with one line on stderr, ``webda COMMAND: error: ...``, naming the flag
or file, and exit status 2, never a traceback: a flag the parser refuses (wrong type, out of
bounds), a :class:`webda.errors.UserError` raised by a command, an ``OSError`` about a file the
user named (a folder where a file is expected, no permission, a full disk), and a
``WEBDA_KERNELS_BACKEND`` that names no backend. A traceback means a bug in webda.
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


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (argparse prints the whole usage first)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
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
        _check_environment()
        status = args.func(args)
    except UserError as err:
        return _fail(args.command, str(err))
    except OSError as err:
        if err.filename is None:  # not about a path the user gave: a bug or the machine, keep the traceback
            raise
        return _fail(args.command, f"{err.filename}: {err.strerror}")
    return int(status or 0)


def _fail(command: str, message: str) -> int:
    print(f"webda {command}: error: {message}", file=sys.stderr)
    return 2


def _check_environment() -> None:
    """:class:`UserError` for environment variables webda reads that hold no valid value."""
    from webda_kernels import environment_backend

    try:
        environment_backend()
    except ValueError as err:
        raise UserError(f"{err}; unset it or name a backend") from None
