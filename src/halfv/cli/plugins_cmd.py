"""``halfv plugins``: what is registered, where it came from, and which plugins failed.

Prints one table of every adapter (with its model types), IVR policy, SSR policy and
estimator with the plugin and package it came from, then one line per failed plugin
(``--verbose`` adds the tracebacks). ``--json`` prints the same as JSON. The exit code is 0
even if a plugin failed, unless ``--strict`` is given (then 1).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from halfv.plugins import Components
    from halfv.plugins.registry import ComponentInfo, PluginFailure

__all__ = ["add_parser", "report", "run"]


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``plugins`` subcommand to ``subparsers``."""
    parser = subparsers.add_parser(
        "plugins",
        help="list registered components and failed plugins",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="show full tracebacks of failed plugins"
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 if any plugin failed")
    parser.set_defaults(func=run)


def _qualname(obj: object) -> str:
    cls = obj if isinstance(obj, type) else type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _package(package: str | None, version: str | None) -> str:
    return f"{package} {version or 'unknown'}" if package else "-"


def _component(info: ComponentInfo[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "kind": info.kind,
        "name": info.name,
        "object": _qualname(info.obj),
        "plugin": info.plugin,
        "package": info.package,
        "version": info.version,
    }
    if info.kind == "adapter":
        out["model_types"] = list(info.obj.model_types)
    return out


def _failure(failure: PluginFailure) -> dict[str, Any]:
    return {
        "plugin": failure.plugin,
        "package": failure.package,
        "version": failure.version,
        "stage": failure.stage,
        "kind": failure.kind,
        "component": failure.component,
        "error_type": type(failure.error).__name__,
        "error": str(failure.error),
        "traceback": failure.traceback,
    }


def report(components: Components) -> dict[str, Any]:
    """The JSON-ready report ``halfv plugins --json`` prints.

    Keys: ``halfv_version``, ``components`` (kind, name, object, plugin, package, version
    and, for adapters, model_types), ``failures`` (plugin, package, version, stage, kind,
    component, error_type, error, traceback) and ``disabled`` (skipped plugin names).
    """
    from halfv.plugins import halfv_version

    return {
        "halfv_version": halfv_version(),
        "components": [_component(i) for i in components.list_components()],
        "failures": [_failure(f) for f in components.failures],
        "disabled": list(components.disabled),
    }


def _print_text(components: Components, *, verbose: bool) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
    table = Table(title="halfv components", title_justify="left")
    for column in ("kind", "name", "model types", "plugin", "package"):
        table.add_column(column, overflow="fold")
    for info in components.list_components():
        model_types = ", ".join(info.obj.model_types) if info.kind == "adapter" else ""
        cells = (info.kind, info.name, model_types, info.plugin)
        table.add_row(*(Text(c) for c in cells), Text(_package(info.package, info.version)))
    if table.row_count:
        console.print(table)
    else:
        console.print("no components registered")
    if components.disabled:
        console.print(Text("disabled plugins: " + ", ".join(components.disabled)))
    failures = components.failures
    if not failures:
        return
    console.print(Text(f"{len(failures)} plugin failure(s):", style="bold red"))
    for failure in failures:
        where = failure.stage + (f", {failure.kind}" if failure.kind else "")
        console.print(Text(f"  {failure.summary()}  [{where}]"), soft_wrap=True)
        if verbose:
            console.print(Text(failure.traceback.rstrip()), soft_wrap=True)
    if not verbose:
        console.print(Text("run `halfv plugins --verbose` for tracebacks", style="dim"))


def run(args: argparse.Namespace) -> int:
    """Print the plugin report; return 1 under ``--strict`` if a plugin failed, else 0."""
    from halfv.plugins import get_components

    components = get_components()
    if args.json:
        sys.stdout.write(json.dumps(report(components), indent=2) + "\n")
    else:
        _print_text(components, verbose=args.verbose)
    return 1 if args.strict and components.failures else 0
