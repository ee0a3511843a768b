"""The ``halfv`` command line.

Each subcommand lives in its own module listed in :data:`SUBCOMMANDS`. A subcommand module
exposes ``add_parser(subparsers) -> None``, which adds one parser with
``subparsers.add_parser(...)`` and calls ``set_defaults(func=run)`` where
``run(args: argparse.Namespace) -> int`` returns the exit code. To add a subcommand, write
the module and append its name to :data:`SUBCOMMANDS`; a listed module that cannot be
imported, or that adds no runnable parser, is an error, never skipped. Import heavy modules
(torch, transformers) inside ``run`` so that ``halfv --help`` stays fast.

Errors: a :class:`~halfv.errors.HalfvError`, ``ValueError`` or ``FileNotFoundError`` raised
by a subcommand is printed as ``halfv: error: <message>`` on stderr (continuation lines of a
multi-line message are indented) and the exit code is 2. ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any

from halfv.errors import HalfvError, HalfvTypeError, MissingDependencyError

__all__ = ["SUBCOMMANDS", "build_parser", "main"]

#: modules that each add one subcommand (see the module docstring)
SUBCOMMANDS: tuple[str, ...] = (
    "halfv.cli.plugins_cmd",
    "halfv.cli.flops_cmd",
    "halfv.cli.bench_accuracy_cmd",
    "halfv.cli.bench_cmd",
    "halfv.cli.profile_cmd",
    "halfv.cli.calibrate_cmd",
    "halfv.cli.demo_cmd",
)

#: exception types reported as one ``halfv: error:`` message instead of a traceback
USER_ERRORS: tuple[type[BaseException], ...] = (HalfvError, ValueError, FileNotFoundError)


class _VersionAction(argparse.Action):
    """``--version``: resolved only when asked, so building the parser stays cheap."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        kwargs.setdefault("help", "show halfv's version and exit")
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        from halfv.plugins import halfv_version

        print(f"halfv {halfv_version()}")
        parser.exit()


def _load_subcommand(module_name: str) -> Any:
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        msg = (
            f"CLI subcommand module {module_name!r} listed in halfv.cli.SUBCOMMANDS cannot be "
            f"imported ({exc}); fix the module or remove it from SUBCOMMANDS"
        )
        raise MissingDependencyError(msg) from exc
    if not callable(getattr(module, "add_parser", None)):
        msg = (
            f"CLI subcommand module {module_name!r} has no add_parser(subparsers) function; "
            "define it to add the subcommand's parser"
        )
        raise HalfvTypeError(msg)
    return module


def build_parser() -> argparse.ArgumentParser:
    """The ``halfv`` argument parser with every subcommand of :data:`SUBCOMMANDS`.

    Raises:
        ImportError: a listed subcommand module cannot be imported.
        TypeError: a module has no ``add_parser`` or its parser sets no ``func``.
    """
    parser = argparse.ArgumentParser(
        prog="halfv", description="HalfV visual-token pruning for multimodal LLMs."
    )
    parser.add_argument("--version", action=_VersionAction)
    debug_help = "show full tracebacks instead of one-line errors"
    parser.add_argument("--debug", action="store_true", help=debug_help)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in SUBCOMMANDS:
        before = set(subparsers.choices)
        _load_subcommand(module_name).add_parser(subparsers)
        added = set(subparsers.choices) - before
        if not added:
            msg = f"CLI subcommand module {module_name!r}: add_parser() added no subcommand"
            raise HalfvTypeError(msg)
        for name in sorted(added):
            sub = subparsers.choices[name]
            if not callable(sub.get_default("func")):
                msg = (
                    f"CLI subcommand {name!r} from {module_name!r} sets no func; call "
                    "parser.set_defaults(func=run) in add_parser()"
                )
                raise HalfvTypeError(msg)
            # also accept `halfv COMMAND --debug`; SUPPRESS keeps the global value otherwise
            sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS)
    return parser


def _report(exc: BaseException) -> None:
    lines = str(exc).strip().splitlines() or [type(exc).__name__]
    print(f"halfv: error: {lines[0]}", file=sys.stderr)
    for line in lines[1:]:
        print(f"  {line}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run the ``halfv`` command line and return its exit code.

    Args:
        argv: arguments without the program name; ``None`` means ``sys.argv[1:]``.

    Returns:
        0 on success, 2 on a usage or user error, or what the subcommand returned.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        if exc.code is None:
            return 0
        return exc.code if isinstance(exc.code, int) else 2
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as exc:
        if args.debug:
            raise
        _report(exc)
        return 2
