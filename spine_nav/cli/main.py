"""`spine-nav`: the command line of spine_nav.

Each subcommand lives in its own module under :mod:`spine_nav.cli` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` (a callable
taking the parsed args and returning an exit code). Exit codes: 0 success,
1 failure of the job, 2 bad input or usage, 3 partial result (documented per
command).
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from spine_nav import __version__

#: Subcommand modules, in the order `spine-nav --help` lists them.
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "spine_nav.cli.demo",
    "spine_nav.cli.up",
    "spine_nav.cli.bench",
    "spine_nav.cli.arm",
    "spine_nav.cli.phantom",
    "spine_nav.cli.plan",
    "spine_nav.cli.register",
    "spine_nav.cli.record",
    "spine_nav.cli.replay",
    "spine_nav.cli.bag",
    "spine_nav.cli.calibrate",
    "spine_nav.cli.sim_tracker",
    "spine_nav.cli.guard",
    "spine_nav.cli.console",
    "spine_nav.cli.rod",
    "spine_nav.cli.train",
)


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error and exit code 2 (argparse prints the whole usage otherwise)."""

    def error(self, message: str) -> None:  # noqa: D401
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="spine-nav",
        description="Image-guided, robot-assisted spine surgery on ROS 2 Jazzy.",
        epilog="Run `spine-nav COMMAND --help` for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"spine_nav {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        sys.stderr.write("spine-nav: interrupted\n")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
