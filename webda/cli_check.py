"""``webda check``: run ``python -m webda_kernels.check`` (every backend against the reference)."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "check", help="check every kernel backend against the reference on this machine"
    )
    parser.add_argument("--quick", action="store_true", help="small sizes only")
    parser.set_defaults(func=_run)


def _run(args) -> int:
    from webda_kernels.check import main

    return main(["--quick"] if args.quick else [])
