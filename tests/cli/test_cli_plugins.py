"""The ``halfv`` CLI frame and ``halfv plugins`` (text and JSON)."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import runpy
import sys
import types
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import pytest
from torch import Tensor

import halfv.plugins as hp
from halfv import cli
from halfv.errors import UnknownComponentError
from halfv.interfaces import IVRPolicy
from halfv.plugins.hookspecs import hookimpl

USER_ERROR = 2  # exit code of `halfv: error:` messages and usage errors


class CliIVR(IVRPolicy):
    name: ClassVar[str] = "cli_ivr"
    needs_features: ClassVar[bool] = False

    def _choose(self, scores: Tensor, features: Tensor | None, keep: int) -> Tensor:
        return scores.topk(keep, dim=-1).indices


class FakeEntryPoint:
    group = "halfv"
    value = "broken_mod"
    dist = types.SimpleNamespace(name="halfv-broken", version="0.3")

    def __init__(self, name: str) -> None:
        self.name = name

    def load(self) -> object:
        msg = "No module named 'torchvision'"
        raise ImportError(msg)


@hookimpl
def register_ivr_policies(register: Callable[[object], None]) -> None:
    register(CliIVR)


@pytest.fixture(autouse=True)
def only_plugins_subcommand(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep these tests independent of the other subcommand modules."""
    monkeypatch.setattr(cli, "SUBCOMMANDS", ("halfv.cli.plugins_cmd",))


@pytest.fixture
def fake_plugins(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """One working built-in (fake_cli_builtin) and one broken entry point (broken)."""
    module = types.ModuleType("fake_cli_builtin")
    module.register_ivr_policies = register_ivr_policies  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(hp.manager, "DEFAULT_PLUGINS", (module.__name__,))

    def entry_points(*, group: str) -> list[FakeEntryPoint]:
        return [FakeEntryPoint("broken")] if group == "halfv" else []

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    for var in ("HALFV_DISABLE_PLUGINS", "HALFV_LOAD_PLUGINS", "HALFV_TRACE_PLUGINS"):
        monkeypatch.delenv(var, raising=False)
    hp.reset_components()
    yield
    hp.reset_components()


# ----------------------------------------------------------------------------- halfv plugins
@pytest.mark.usefixtures("fake_plugins")
def test_plugins_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "IVR policy" in out
    assert "cli-ivr" in out
    assert "fake_cli_builtin" in out
    assert f"halfv {hp.halfv_version()}" in out
    assert "1 plugin failure(s):" in out
    assert "broken (halfv-broken 0.3): ImportError: No module named 'torchvision'" in out
    assert "Traceback" not in out


@pytest.mark.usefixtures("fake_plugins")
def test_plugins_verbose_shows_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["plugins", "--verbose"]) == 0
    assert "Traceback (most recent call last)" in capsys.readouterr().out


@pytest.mark.usefixtures("fake_plugins")
def test_plugins_strict_fails_on_broken_plugin(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["plugins", "--strict"]) == 1
    capsys.readouterr()
    hp.reset_components()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HALFV_DISABLE_PLUGINS", "broken")
        assert cli.main(["plugins", "--strict"]) == 0
        assert "disabled plugins: broken" in capsys.readouterr().out


@pytest.mark.usefixtures("fake_plugins")
def test_plugins_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["plugins", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["halfv_version"] == hp.halfv_version()
    assert data["components"] == [
        {
            "kind": "IVR policy",
            "name": "cli-ivr",
            "object": f"{__name__}.CliIVR",
            "plugin": "fake_cli_builtin",
            "package": "halfv",
            "version": hp.halfv_version(),
        }
    ]
    (failure,) = data["failures"]
    assert failure["plugin"] == "broken"
    assert (failure["package"], failure["version"]) == ("halfv-broken", "0.3")
    assert (failure["stage"], failure["error_type"]) == ("import", "ImportError")
    assert "Traceback" in failure["traceback"]
    assert data["disabled"] == []


def test_plugins_with_real_builtins_lists_each_or_its_failure(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever state halfv's built-ins are in, each is either a source or a failure."""
    monkeypatch.setenv("HALFV_LOAD_PLUGINS", "")  # no third-party plugins
    hp.reset_components()
    try:
        assert cli.main(["plugins", "--json"]) == 0
    finally:
        hp.reset_components()
    data = json.loads(capsys.readouterr().out)
    sources = {c["plugin"] for c in data["components"]}
    failed = {f["plugin"] for f in data["failures"]}
    for name in hp.DEFAULT_PLUGINS:
        assert name in sources | failed, name


# ----------------------------------------------------------------------------- CLI frame
def _subcommand(monkeypatch: pytest.MonkeyPatch, run: Callable[[argparse.Namespace], int]) -> None:
    module = types.ModuleType("fake_cli_cmd")

    def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
        subparsers.add_parser("boom").set_defaults(func=run)

    module.add_parser = add_parser  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(cli, "SUBCOMMANDS", (*cli.SUBCOMMANDS, module.__name__))


def _raise(exc: Exception) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        raise exc

    return run


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("keep=2.0 must be in (0, 1]"),
        FileNotFoundError("config.toml not found"),
        UnknownComponentError("unknown adapter 'x'; registered: llava"),
    ],
)
def test_user_errors_are_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], exc: Exception
) -> None:
    _subcommand(monkeypatch, _raise(exc))
    assert cli.main(["boom"]) == USER_ERROR
    err = capsys.readouterr().err
    assert err == f"halfv: error: {exc}\n"


def test_multiline_error_is_indented(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _subcommand(monkeypatch, _raise(ValueError("first\nsecond")))
    assert cli.main(["boom"]) == USER_ERROR
    assert capsys.readouterr().err == "halfv: error: first\n  second\n"


@pytest.mark.parametrize("argv", [["--debug", "boom"], ["boom", "--debug"]])
def test_debug_shows_traceback(monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> None:
    _subcommand(monkeypatch, _raise(ValueError("bad")))
    with pytest.raises(ValueError, match="bad"):
        cli.main(argv)


def test_other_errors_are_not_swallowed(monkeypatch: pytest.MonkeyPatch) -> None:
    _subcommand(monkeypatch, _raise(RuntimeError("bug")))
    with pytest.raises(RuntimeError, match="bug"):
        cli.main(["boom"])


def test_exit_code_of_subcommand(monkeypatch: pytest.MonkeyPatch) -> None:
    _subcommand(monkeypatch, lambda args: 3)
    assert cli.main(["boom"]) == 3


def test_missing_subcommand_module_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "SUBCOMMANDS", ("halfv.cli.no_such_cmd",))
    with pytest.raises(
        ImportError, match=r"'halfv\.cli\.no_such_cmd' listed in halfv\.cli\.SUBCOMMANDS"
    ):
        cli.build_parser()


def test_subcommand_without_func_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("nofunc_cmd")
    module.add_parser = lambda sub: sub.add_parser("nofunc")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "nofunc_cmd", module)
    monkeypatch.setattr(cli, "SUBCOMMANDS", ("nofunc_cmd",))
    with pytest.raises(TypeError, match=r"'nofunc' from 'nofunc_cmd' sets no func"):
        cli.build_parser()


def test_usage_errors_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == USER_ERROR
    assert "required: COMMAND" in capsys.readouterr().err
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out == f"halfv {hp.halfv_version()}\n"
    assert cli.main(["plugins", "--help"]) == 0
    assert "--strict" in capsys.readouterr().out


@pytest.mark.usefixtures("fake_plugins")
def test_python_dash_m(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "argv", ["halfv", "plugins", "--json"])
    monkeypatch.delitem(sys.modules, "halfv.cli.__main__", raising=False)
    with pytest.raises(SystemExit) as info:
        runpy.run_module("halfv.cli", run_name="__main__")
    assert info.value.code == 0
    data: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert data["components"][0]["name"] == "cli-ivr"


def test_plugins_survives_sys_exit_in_a_plugin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    class ExitingEntryPoint(FakeEntryPoint):
        def load(self) -> object:
            raise SystemExit(1)

    monkeypatch.setattr(hp.manager, "DEFAULT_PLUGINS", ())
    monkeypatch.setattr(
        importlib.metadata,
        "entry_points",
        lambda *, group: [ExitingEntryPoint("quitter")] if group == "halfv" else [],
    )
    hp.reset_components()
    try:
        assert cli.main(["plugins"]) == 0
        assert "quitter (halfv-broken 0.3): SystemExit: 1" in capsys.readouterr().out
    finally:
        hp.reset_components()
