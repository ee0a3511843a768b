"""Plugin loading: built-ins, entry points, broken plugins, env switches.

Every test builds fresh components. Built-ins are replaced by fake modules put in
``sys.modules`` and entry points by fake objects (as pluggy's own tests do), so nothing here
depends on halfv's real policies, estimators or adapters. One test builds a real throwaway
distribution on disk so ``importlib.metadata`` discovers it for real.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import logging
import sys
import textwrap
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pluggy
import pytest
from pydantic import Field
from torch import Tensor, nn

import halfv.plugins as hp
from halfv.config import PruningConfig
from halfv.errors import PluginLoadError, UnknownComponentError, UnsupportedModelError
from halfv.interfaces import (
    AttentionParts,
    BackboneAdapter,
    EntropyEstimator,
    EntropyResult,
    IVRPolicy,
    SaturationDetector,
    SaturationReport,
    SSRPolicy,
)
from halfv.plugins import hookspecs
from halfv.plugins.hookspecs import hookimpl
from halfv.plugins.registry import PluginFailure

Register = Callable[[object], None]


# ----------------------------------------------------------------------------- fakes
class FakeIVR(IVRPolicy):
    name: ClassVar[str] = "fake_ivr"
    needs_features: ClassVar[bool] = False
    alpha: float = Field(0.5, ge=0.0, le=1.0)

    def _choose(self, scores: Tensor, features: Tensor | None, keep: int) -> Tensor:
        return scores.topk(keep, dim=-1).indices


class ThirdPartyIVR(FakeIVR):
    name: ClassVar[str] = "Fake IVR"  # same key as FakeIVR after normalisation


class FakeSSR(SSRPolicy):
    name: ClassVar[str] = "fake-freeze"
    mode: ClassVar[Any] = "freeze"


class BadModeSSR(FakeSSR):
    name: ClassVar[str] = "bad-mode"
    mode: ClassVar[Any] = "melt"


class FakeEstimator(EntropyEstimator):
    name: ClassVar[str] = "fake-tme"

    def estimate(self, hidden: Tensor) -> EntropyResult:
        raise NotImplementedError


class FakeDetector(SaturationDetector):
    def detect(
        self, model: nn.Module, adapter: BackboneAdapter, inputs: Sequence[Mapping[str, Any]]
    ) -> SaturationReport:
        return SaturationReport("freeze", [], 0.0, 0.0, "always freeze")


class FakeAdapter(BackboneAdapter):
    name: ClassVar[str] = "fakevlm"
    model_types: ClassVar[tuple[str, ...]] = ("fake_vlm",)
    follows: ClassVar[str] = "test double"

    def __init__(self, with_detector: bool = True) -> None:
        if with_detector:
            self.saturation_detector = FakeDetector()

    def language_model(self, model: nn.Module) -> nn.Module:
        return model

    def visual_token_ids(self, model: nn.Module) -> tuple[int, ...]:
        return (0,)

    def attention_parts(self, layer: nn.Module) -> AttentionParts:
        raise NotImplementedError

    def default_config(self, model: nn.Module) -> PruningConfig:
        raise NotImplementedError


def make_plugin(name: str, **hooks: Callable[..., None]) -> types.ModuleType:
    """A module object whose attributes are the given functions, marked as hookimpls."""
    module = types.ModuleType(name)
    for hook_name, func in hooks.items():
        func.__name__ = hook_name
        setattr(module, hook_name, hookimpl(func))
    return module


def registers(*objs: object) -> Callable[[Register], None]:
    """A hook body that registers ``objs``."""

    def hook(register: Register) -> None:
        for obj in objs:
            register(obj)

    return hook


def raises(exc: BaseException) -> Callable[[Register], None]:
    def hook(register: Register) -> None:
        raise exc

    return hook


class FakeDist:
    def __init__(self, name: str, version: str) -> None:
        self.name, self.version = name, version


class FakeEntryPoint:
    group = "halfv"

    def __init__(self, name: str, target: object, dist: str = "pkg", version: str = "1.0") -> None:
        self.name, self.value, self.dist = name, f"{dist}_mod", FakeDist(dist, version)
        self._target = target

    def load(self) -> object:
        if isinstance(self._target, BaseException):
            raise self._target
        return self._target


@pytest.fixture(autouse=True)
def fresh(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No real built-ins, no real entry points, no env switches, a fresh global."""
    for var in ("HALFV_DISABLE_PLUGINS", "HALFV_LOAD_PLUGINS", "HALFV_TRACE_PLUGINS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(hp.manager, "DEFAULT_PLUGINS", ())
    set_entry_points(monkeypatch)
    hp.reset_components()
    yield
    hp.reset_components()


def set_entry_points(monkeypatch: pytest.MonkeyPatch, *eps: FakeEntryPoint) -> None:
    def entry_points(*, group: str) -> list[FakeEntryPoint]:
        return [ep for ep in eps if ep.group == group]

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)


def builtin(monkeypatch: pytest.MonkeyPatch, module: types.ModuleType) -> None:
    """Make ``module`` importable and one of the default plugins."""
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(
        hp.manager, "DEFAULT_PLUGINS", (*hp.manager.DEFAULT_PLUGINS, module.__name__)
    )


def the_failure(plugin: str) -> PluginFailure:
    (found,) = [f for f in hp.plugin_failures() if f.plugin == plugin]
    return found


# ----------------------------------------------------------------------------- happy paths
def test_builtins_and_entry_points_register(monkeypatch: pytest.MonkeyPatch) -> None:
    builtin(monkeypatch, make_plugin("fake_builtin", register_ivr_policies=registers(FakeIVR)))
    third = make_plugin(
        "third",
        register_adapters=registers(FakeAdapter()),
        register_ssr_policies=registers(FakeSSR),
        register_estimators=registers(FakeEstimator),
    )
    set_entry_points(monkeypatch, FakeEntryPoint("third", third, "halfv-third", "2.1"))
    assert hp.plugin_failures() == []
    (ivr,) = hp.list_components("IVR policy")
    assert (ivr.name, ivr.plugin, ivr.package) == ("fake-ivr", "fake_builtin", "halfv")
    assert ivr.version == hp.halfv_version()
    (ssr,) = hp.list_components("SSR policy")
    assert (ssr.plugin, ssr.package, ssr.version) == ("third", "halfv-third", "2.1")
    kinds = [c.kind for c in hp.list_components()]
    assert kinds == ["adapter", "IVR policy", "SSR policy", "estimator"]
    assert isinstance(hp.get_ivr_policy("FAKE_IVR", alpha=0.25), FakeIVR)
    assert hp.get_ivr_policy("fake ivr") == FakeIVR(alpha=0.5)
    assert isinstance(hp.get_ssr_policy("fake-freeze"), FakeSSR)
    assert isinstance(hp.get_estimator("fake-tme"), FakeEstimator)


def test_adapter_lookup_by_name_model_type_and_model(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeAdapter()
    builtin(monkeypatch, make_plugin("fake_adapters", register_adapters=registers(fake)))
    model = types.SimpleNamespace(config=types.SimpleNamespace(model_type="fake_vlm"))
    assert hp.get_adapter("fakevlm") is fake
    assert hp.get_adapter("fake_vlm") is fake
    assert hp.get_adapter_for(model) is fake
    model.config.model_type = "gemma3"
    with pytest.raises(UnknownComponentError) as info:
        hp.get_adapter_for(model)
    assert str(info.value).startswith(
        "no adapter for model_type 'gemma3'; registered model types: fake_vlm (adapters: fakevlm)"
    )
    with pytest.raises(UnsupportedModelError, match=r"object.*no config.model_type"):
        hp.get_adapter_for(object())


def test_components_are_cached_until_reset() -> None:
    first = hp.get_components()
    assert hp.get_components() is first
    hp.reset_components()
    assert hp.get_components() is not first


def test_options_validation_names_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    builtin(monkeypatch, make_plugin("fake_builtin", register_ivr_policies=registers(FakeIVR)))
    with pytest.raises(ValueError, match="invalid options for IVR policy 'fake-ivr'") as info:
        hp.get_ivr_policy("fake_ivr", alpha=3.0)
    assert "alpha" in str(info.value)
    assert "accepted options: alpha" in str(info.value)
    with pytest.raises(ValueError, match=r"(?s)bogus.*Extra inputs are not permitted"):
        hp.get_ivr_policy("fake_ivr", bogus=1)


# ----------------------------------------------------------------------------- broken plugins
def test_import_failure_is_recorded_and_others_load(monkeypatch: pytest.MonkeyPatch) -> None:
    cause = ImportError("No module named 'torchvision'")
    good = make_plugin("good", register_ivr_policies=registers(FakeIVR))
    set_entry_points(
        monkeypatch,
        FakeEntryPoint("broken", cause, "halfv-broken", "0.3"),
        FakeEntryPoint("good", good),
    )
    assert isinstance(hp.get_ivr_policy("fake-ivr"), FakeIVR)
    failure = the_failure("broken")
    assert (failure.package, failure.version, failure.stage) == ("halfv-broken", "0.3", "import")
    assert failure.error is cause
    assert "torchvision" in failure.traceback
    with pytest.raises(PluginLoadError) as info:
        hp.get_ivr_policy("broken")
    assert info.value.__cause__ is cause
    with pytest.raises(UnknownComponentError) as unknown:
        hp.get_estimator("nope")
    assert str(unknown.value) == (
        "unknown estimator 'nope'; registered: (none); 1 plugin(s) failed to load: "
        "broken (halfv-broken 0.3): ImportError: No module named 'torchvision'; "
        "run `halfv plugins` for details"
    )


def test_missing_builtin_is_reported_like_any_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hp.manager, "DEFAULT_PLUGINS", ("halfv_no_such_module",))
    failure = the_failure("halfv_no_such_module")
    assert isinstance(failure.error, ModuleNotFoundError)
    assert failure.package == "halfv"


def test_misspelled_hook_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    typo = make_plugin(
        "typo",
        register_adapter=registers(FakeAdapter()),
        register_ivr_policies=registers(FakeIVR),
    )
    set_entry_points(monkeypatch, FakeEntryPoint("typo", typo))
    failure = the_failure("typo")
    assert isinstance(failure.error, pluggy.PluginValidationError)
    assert failure.stage == "register"
    message = str(failure.error)
    assert "unknown hook(s) register_adapter" in message
    assert "register_adapters, register_ivr_policies, register_ssr_policies" in message
    components = hp.get_components()
    assert components.pm.get_plugin("typo") is None
    assert hp.list_components() == []  # the plugin's valid hooks did not run either
    components.pm.check_pending()  # nothing unknown is left behind


def test_hook_with_unknown_argument_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    def register_ivr_policies(register: Register, model: object) -> None: ...

    bad = make_plugin("bad", register_ivr_policies=register_ivr_policies)
    set_entry_points(monkeypatch, FakeEntryPoint("bad", bad))
    failure = the_failure("bad")
    assert isinstance(failure.error, pluggy.PluginValidationError)
    assert "model" in str(failure.error)


def test_plugin_without_hooks_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    set_entry_points(monkeypatch, FakeEntryPoint("empty", types.ModuleType("empty_mod")))
    assert "implements no halfv hooks" in str(the_failure("empty").error)


def test_exception_in_hook_is_attributed(monkeypatch: pytest.MonkeyPatch) -> None:
    cause = RuntimeError("GPU not found")
    flaky = make_plugin(
        "flaky",
        register_ivr_policies=raises(cause),
        register_estimators=registers(FakeEstimator),
    )
    other = make_plugin("other", register_ssr_policies=registers(FakeSSR))
    set_entry_points(monkeypatch, FakeEntryPoint("flaky", flaky), FakeEntryPoint("other", other))
    failure = the_failure("flaky")
    assert (failure.stage, failure.kind, failure.error) == ("hook", "IVR policy", cause)
    assert isinstance(hp.get_estimator("fake-tme"), FakeEstimator)  # its other hooks ran
    assert isinstance(hp.get_ssr_policy("fake-freeze"), FakeSSR)  # and other plugins loaded
    with pytest.raises(PluginLoadError) as info:
        hp.get_ivr_policy("flaky")
    assert info.value.__cause__ is cause


def test_duplicate_is_reported_and_first_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    builtin(monkeypatch, make_plugin("fake_builtin", register_ivr_policies=registers(FakeIVR)))
    clash = make_plugin("clash", register_ivr_policies=registers(ThirdPartyIVR))
    set_entry_points(monkeypatch, FakeEntryPoint("clash", clash, "halfv-clash", "9.9"))
    assert hp.get_ivr_policy("fake-ivr").__class__ is FakeIVR
    failure = the_failure("clash")
    assert str(failure.error).startswith(
        "IVR policy 'fake-ivr' from plugin 'clash' (halfv-clash 9.9) is already registered "
        f"by plugin 'fake_builtin' (halfv {hp.halfv_version()})"
    )


def test_adapter_without_detector_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    plugin = make_plugin("nodet", register_adapters=registers(FakeAdapter(with_detector=False)))
    set_entry_points(monkeypatch, FakeEntryPoint("nodet", plugin))
    failure = the_failure("nodet")
    assert (failure.stage, failure.kind, failure.component) == ("component", "adapter", "fakevlm")
    assert "has no saturation_detector" in str(failure.error)
    with pytest.raises(PluginLoadError, match="saturation_detector") as info:
        hp.get_adapter("fakevlm")
    assert isinstance(info.value.__cause__, TypeError)


def test_bad_registrations_do_not_stop_the_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    mixed = make_plugin(
        "mixed", register_ssr_policies=registers(BadModeSSR, FakeIVR, FakeSSR)
    )  # wrong mode, wrong kind, fine
    set_entry_points(monkeypatch, FakeEntryPoint("mixed", mixed))
    messages = [str(f.error) for f in hp.plugin_failures()]
    assert len(messages) == 2
    assert "mode='melt'" in messages[0]
    assert "must be a subclass of halfv.interfaces.SSRPolicy" in messages[1]
    assert [c.name for c in hp.list_components()] == ["fake-freeze"]


def test_lookup_while_loading_is_reported_not_deadlocked(monkeypatch: pytest.MonkeyPatch) -> None:
    def register_ivr_policies(register: Register) -> None:
        hp.get_ivr_policy("anything")

    builtin(monkeypatch, make_plugin("eager", register_ivr_policies=register_ivr_policies))
    failure = the_failure("eager")
    assert isinstance(failure.error, RuntimeError)
    assert "while plugins were loading" in str(failure.error)


def test_same_module_under_two_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    plugin = make_plugin("twice", register_ivr_policies=registers(FakeIVR))
    set_entry_points(monkeypatch, FakeEntryPoint("one", plugin), FakeEntryPoint("two", plugin))
    assert "already registered as plugin 'one'" in str(the_failure("two").error)


# ----------------------------------------------------------------------------- env switches
def _three(monkeypatch: pytest.MonkeyPatch) -> None:
    set_entry_points(
        monkeypatch,
        FakeEntryPoint("alpha", make_plugin("a", register_ivr_policies=registers(FakeIVR))),
        FakeEntryPoint("beta", make_plugin("b", register_ssr_policies=registers(FakeSSR))),
        FakeEntryPoint("gamma", make_plugin("c", register_estimators=registers(FakeEstimator))),
    )


def _plugins() -> set[str]:
    return {c.plugin for c in hp.list_components()}


def test_disable_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    builtin(monkeypatch, make_plugin("fake_builtin", register_adapters=registers(FakeAdapter())))
    _three(monkeypatch)
    monkeypatch.setenv("HALFV_DISABLE_PLUGINS", "alpha, fake_builtin")
    assert _plugins() == {"beta", "gamma"}
    assert hp.get_components().disabled == ["fake_builtin", "alpha"]


def test_load_plugins_allow_list(monkeypatch: pytest.MonkeyPatch) -> None:
    _three(monkeypatch)
    monkeypatch.setenv("HALFV_LOAD_PLUGINS", "beta,missing")
    assert _plugins() == {"beta"}
    assert "'missing' named in HALFV_LOAD_PLUGINS is not installed" in str(
        the_failure("missing").error
    )
    hp.reset_components()
    monkeypatch.setenv("HALFV_LOAD_PLUGINS", "")
    assert _plugins() == set()
    assert hp.plugin_failures() == []


def test_trace_plugins_logs_hook_calls(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _three(monkeypatch)
    monkeypatch.setenv("HALFV_TRACE_PLUGINS", "1")
    with caplog.at_level(logging.DEBUG, logger="halfv.plugins"):
        hp.get_components()
    assert "register_ivr_policies" in caplog.text


# ----------------------------------------------------------------------------- real dists
def _dist(root: Path, name: str, module_source: str) -> None:
    info = root / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[halfv]\n{name} = {name}_mod\n")
    (root / f"{name}_mod.py").write_text(textwrap.dedent(module_source))


def test_real_distribution_on_disk(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.undo()  # the real importlib.metadata.entry_points, the fresh() env aside
    monkeypatch.setattr(hp.manager, "DEFAULT_PLUGINS", ())
    for var in ("HALFV_DISABLE_PLUGINS", "HALFV_LOAD_PLUGINS", "HALFV_TRACE_PLUGINS"):
        monkeypatch.delenv(var, raising=False)
    _dist(
        tmp_path,
        "fakeplug",
        """
        from typing import ClassVar
        from halfv.plugins.hookspecs import hookimpl
        from halfv.interfaces import IVRPolicy

        class Disk(IVRPolicy):
            name: ClassVar[str] = "disk_policy"
            needs_features: ClassVar[bool] = False
            def _choose(self, scores, features, keep):
                return scores.topk(keep, dim=-1).indices

        @hookimpl
        def register_ivr_policies(register):
            register(Disk)
        """,
    )
    _dist(tmp_path, "brokenplug", "raise RuntimeError('brokenplug cannot start')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for mod in ("fakeplug_mod", "brokenplug_mod"):
        monkeypatch.delitem(sys.modules, mod, raising=False)
    importlib.invalidate_caches()
    hp.reset_components()
    try:
        policy = hp.get_ivr_policy("disk-policy")
        assert type(policy).__module__ == "fakeplug_mod"
        info = next(c for c in hp.list_components() if c.name == "disk-policy")
        assert (info.plugin, info.package, info.version) == ("fakeplug", "fakeplug", "0.1")
        broken = the_failure("brokenplug")
        assert (broken.package, broken.version) == ("brokenplug", "0.1")
        assert "brokenplug cannot start" in str(broken.error)
    finally:
        hp.reset_components()
        for mod in ("fakeplug_mod", "brokenplug_mod"):
            sys.modules.pop(mod, None)


# ----------------------------------------------------------------------------- meta
HOOKS = sorted(n for n in dir(hookspecs) if n.startswith("register_"))


def _signature(hook_name: str) -> str:
    sig = inspect.signature(getattr(hookspecs, hook_name))
    params = ", ".join(f"{p.name}: {p.annotation}" for p in sig.parameters.values())
    return f"{hook_name}({params}) -> {sig.return_annotation}"


#: the hooks the component registries call; register_commands is the command line's
#: (exercised in tests/cli/test_cli_command_plugins.py)
COMPONENT_HOOKS = [name for name in HOOKS if name != "register_commands"]


def test_hook_table_matches_hookspecs() -> None:
    assert "register_commands" in HOOKS
    assert sorted(hp.manager._HOOKS) == COMPONENT_HOOKS


@pytest.mark.parametrize("hook_name", HOOKS)
def test_every_hook_is_documented(hook_name: str) -> None:
    docs = Path(__file__).parents[2] / "docs" / "plugins.md"
    assert f"`{_signature(hook_name)}`" in docs.read_text(encoding="utf-8")


@pytest.mark.parametrize("hook_name", COMPONENT_HOOKS)
def test_every_hook_is_exercised_here(hook_name: str) -> None:
    assert f"{hook_name}=registers(" in Path(__file__).read_text(encoding="utf-8")


def test_documented_plugin_test_recipe_works() -> None:
    plugin = make_plugin("recipe", register_ivr_policies=registers(FakeIVR))
    components = hp.Components(default_plugins=(), load_entry_points=False)
    assert components.add_plugin(plugin, "recipe", package="halfv-recipe")
    assert components.failures == []
    assert components.create("IVR policy", "fake-ivr", alpha=0.1) == FakeIVR(alpha=0.1)


# ----------------------------------------------------------------------------- BaseException
def test_sys_exit_on_import_is_recorded_and_others_load(monkeypatch: pytest.MonkeyPatch) -> None:
    good = make_plugin("good", register_ivr_policies=registers(FakeIVR))
    set_entry_points(
        monkeypatch,
        FakeEntryPoint("quitter", SystemExit(3), "halfv-quitter", "0.1"),
        FakeEntryPoint("good", good),
    )
    failure = the_failure("quitter")
    assert (failure.stage, type(failure.error)) == ("import", SystemExit)
    assert "quitter (halfv-quitter 0.1): SystemExit: 3" in failure.summary()
    assert isinstance(hp.get_ivr_policy("fake_ivr"), FakeIVR)
    with pytest.raises(PluginLoadError, match="SystemExit"):
        hp.get_ivr_policy("quitter")


class _Unusual(BaseException):
    """A BaseException that is neither Exception nor KeyboardInterrupt."""


@pytest.mark.parametrize("exc", [SystemExit(1), GeneratorExit(), _Unusual("odd")])
def test_base_exception_in_hook_or_component_is_recorded(
    monkeypatch: pytest.MonkeyPatch, exc: BaseException
) -> None:
    class ExitingAdapter(FakeAdapter):  # the registry reads .name, which raises
        @property  # type: ignore[misc]
        def name(self) -> str:  # type: ignore[override]
            raise exc

    bad_hook = make_plugin("bad_hook", register_ivr_policies=raises(exc))
    bad_component = make_plugin("bad_component", register_adapters=registers(ExitingAdapter()))
    good = make_plugin("good", register_ssr_policies=registers(FakeSSR))
    builtin(monkeypatch, make_plugin("builtin_exit", register_adapters=raises(exc)))
    set_entry_points(
        monkeypatch,
        FakeEntryPoint("bad_hook", bad_hook),
        FakeEntryPoint("bad_component", bad_component),
        FakeEntryPoint("good", good),
    )
    assert the_failure("bad_hook").error is exc
    assert the_failure("bad_hook").stage == "hook"
    assert the_failure("bad_component").error is exc
    assert the_failure("bad_component").stage == "component"
    assert the_failure("builtin_exit").error is exc
    assert isinstance(hp.get_ssr_policy("fake-freeze"), FakeSSR)


def test_keyboard_interrupt_still_stops_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    set_entry_points(monkeypatch, FakeEntryPoint("ctrl_c", KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        hp.get_components()
