"""Plugins add ``halfv`` subcommands through ``register_commands``; a broken one is contained.

The plugins here are modules registered as entry points of the ``halfv`` group (faked), the
way the lab (``halfv-lab``) and third parties plug in. One that raises, takes a command name
already used, or adds a command without ``func`` is named in one stderr warning; the
built-in commands and the other plugins' commands still run.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import types
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import halfv.plugins as hp
from halfv import cli
from halfv.plugins.hookspecs import hookimpl


def _plugin(name: str, register: Callable[[argparse._SubParsersAction[Any]], None]) -> Any:
    @hookimpl
    def register_commands(subparsers: argparse._SubParsersAction[Any]) -> None:
        register(subparsers)

    module = types.ModuleType(name)
    module.register_commands = register_commands  # type: ignore[attr-defined]
    return module


def _good(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser("hello", help="say hello")
    parser.add_argument("--name", default="world")
    parser.set_defaults(func=lambda args: print(f"hello {args.name}") or 7)


def _raises(subparsers: argparse._SubParsersAction[Any]) -> None:
    subparsers.add_parser("half-added", help="added before the failure").set_defaults(func=print)
    msg = "No module named 'matplotlib'"
    raise ImportError(msg)


def _clashes(subparsers: argparse._SubParsersAction[Any]) -> None:
    subparsers.add_parser("plugins", help="takes the built-in's name")


def _no_func(subparsers: argparse._SubParsersAction[Any]) -> None:
    subparsers.add_parser("idle", help="runs nothing")


class FakeEntryPoint:
    group = "halfv"

    def __init__(self, name: str, module: Any) -> None:
        self.name, self.value, self.module = name, name, module
        self.dist = types.SimpleNamespace(name=f"halfv-{name}", version="1.0")

    def load(self) -> Any:
        return self.module


@pytest.fixture
def command_plugins(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(cli, "SUBCOMMANDS", ("halfv.cli.plugins_cmd",))
    monkeypatch.setattr(hp.manager, "DEFAULT_PLUGINS", ())
    plugins = {"broken": _raises, "good": _good, "clash": _clashes, "idle": _no_func}
    found = [FakeEntryPoint(name, _plugin(name, reg)) for name, reg in plugins.items()]
    monkeypatch.setattr(
        importlib.metadata, "entry_points", lambda *, group: found if group == "halfv" else []
    )
    for var in ("HALFV_DISABLE_PLUGINS", "HALFV_LOAD_PLUGINS", "HALFV_TRACE_PLUGINS"):
        monkeypatch.delenv(var, raising=False)
    hp.reset_components()
    yield
    hp.reset_components()


@pytest.mark.usefixtures("command_plugins")
def test_each_broken_command_plugin_is_named_and_the_rest_still_run(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = cli.build_parser()
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("halfv: warning:")]
    assert len(warnings) == 3, err
    assert "plugin 'broken' failed to add its commands (No module named 'matplotlib')" in err
    assert "plugin 'clash' failed" in err
    assert "conflicting subparser: plugins" in err
    assert "plugin 'idle' failed" in err
    assert "'idle' sets no func" in err
    assert "HALFV_DISABLE_PLUGINS=broken" in err
    # what a failed plugin added is gone from parsing and from --help
    usage = parser.format_help()
    assert "hello" in usage
    for gone in ("half-added", "idle"):
        assert gone not in usage
    # the good plugin's command and the built-in one still work
    assert cli.main(["hello", "--name", "lab"]) == 7
    assert "hello lab" in capsys.readouterr().out
    assert cli.main(["plugins"]) == 0
    assert cli.main(["half-added"]) == 2  # a usage error: the command does not exist


@pytest.mark.usefixtures("command_plugins")
def test_a_disabled_command_plugin_adds_nothing_and_is_not_reported(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HALFV_DISABLE_PLUGINS", "broken,clash,idle")
    hp.reset_components()
    assert cli.main(["hello"]) == 7
    assert "halfv: warning" not in capsys.readouterr().err
    monkeypatch.setenv("HALFV_DISABLE_PLUGINS", "good")
    hp.reset_components()
    assert cli.main(["hello"]) == 2
    assert "invalid choice: 'hello'" in capsys.readouterr().err


def test_commands_hook_is_a_spec_and_not_a_component_hook() -> None:
    caller = hp.get_components().pm.hook.register_commands
    assert caller.spec is not None
    assert "register_commands" not in hp.manager._HOOKS
