"""The ``halfv`` command line.

Each built-in subcommand lives in its own module listed in :data:`SUBCOMMANDS`. A subcommand module
exposes ``add_parser(subparsers) -> None``, which adds one parser with
``subparsers.add_parser(...)`` and calls ``set_defaults(func=run)`` where
``run(args: argparse.Namespace) -> int`` returns the exit code. To add a subcommand, write
the module and append its name to :data:`SUBCOMMANDS`; a listed module that cannot be
imported, or that adds no runnable parser, is an error, never skipped. Import heavy modules
(torch, transformers) inside ``run`` so that ``halfv --help`` stays fast.

Plugins add subcommands through the ``register_commands`` hook
(:func:`halfv.plugins.hookspecs.register_commands`), after the built-in ones: the lab
(``halfv-lab``) adds ``demo`` and ``bench``. A plugin whose hook fails is reported by name
on stderr (``halfv: warning: ...``) and its commands are left out; nothing else is.

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
    "halfv.cli.profile_cmd",
    "halfv.cli.calibrate_cmd",
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
    """The ``halfv`` argument parser: every subcommand of :data:`SUBCOMMANDS`, then plugins'.

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
    add_plugin_commands(subparsers)
    return parser


def add_plugin_commands(subparsers: argparse._SubParsersAction[Any]) -> list[str]:
    """Call each plugin's ``register_commands`` hook on ``subparsers``, one plugin at a time.

    A plugin whose hook raises, reuses a taken command name or adds a command without
    ``func`` gets a ``halfv: warning:`` line naming it and the fix on stderr; the commands it
    added are removed, and the other plugins still add theirs.

    Returns:
        The plugin names that failed, in calling order.
    """
    from halfv.plugins import get_components

    pm = get_components().pm
    failed: list[str] = []
    for impl in pm.hook.register_commands.get_hookimpls():
        name = pm.get_name(impl.plugin) or repr(impl.plugin)
        before = set(subparsers.choices)
        others = [p for p in pm.get_plugins() if p is not impl.plugin]
        try:
            pm.subset_hook_caller("register_commands", remove_plugins=others)(subparsers=subparsers)
            added = sorted(set(subparsers.choices) - before)
            _check_runnable(subparsers, added)
        except Exception as exc:  # noqa: BLE001 -- one broken plugin must not stop the CLI
            _drop_commands(subparsers, set(subparsers.choices) - before)
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            print(
                f"halfv: warning: plugin {name!r} failed to add its commands ({reason}); they "
                f"are unavailable. Fix or upgrade the plugin, or skip it with "
                f"HALFV_DISABLE_PLUGINS={name}",
                file=sys.stderr,
            )
            failed.append(name)
            continue
        for command in added:
            sub = subparsers.choices[command]
            sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS)
    return failed


def _check_runnable(subparsers: argparse._SubParsersAction[Any], names: list[str]) -> None:
    for command in names:
        if not callable(subparsers.choices[command].get_default("func")):
            msg = f"its command {command!r} sets no func: call parser.set_defaults(func=run)"
            raise HalfvTypeError(msg)


def _drop_commands(subparsers: argparse._SubParsersAction[Any], names: set[str]) -> None:
    """Remove the subcommands ``names`` (a failed plugin's) from parsing and from --help."""
    for command in names:
        del subparsers.choices[command]
    subparsers._choices_actions[:] = [
        action for action in subparsers._choices_actions if action.dest not in names
    ]


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
