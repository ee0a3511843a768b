"""Unit tests of halfv.plugins.registry: normalisation, validation, duplicates, unknown names."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor, nn

from halfv.config import PruningConfig
from halfv.errors import DuplicateComponentError, PluginLoadError, UnknownComponentError
from halfv.interfaces import (
    AttentionParts,
    BackboneAdapter,
    IVRPolicy,
    SaturationDetector,
    SaturationReport,
)
from halfv.plugins.registry import (
    AdapterRegistry,
    ClassRegistry,
    PluginFailure,
    normalise_name,
)


# ----------------------------------------------------------------------------- fakes
class FakeIVR(IVRPolicy):
    name: ClassVar[str] = "Fake_IVR"
    needs_features: ClassVar[bool] = False

    def _choose(self, scores: Tensor, features: Tensor | None, keep: int) -> Tensor:
        return scores.topk(keep, dim=-1).indices


class OtherIVR(FakeIVR):
    name: ClassVar[str] = "fake ivr"


class NamelessIVR(IVRPolicy):
    def _choose(self, scores: Tensor, features: Tensor | None, keep: int) -> Tensor:
        return scores.topk(keep, dim=-1).indices


class AbstractIVR(IVRPolicy):
    name: ClassVar[str] = "abstract"


class FakeDetector(SaturationDetector):
    def detect(
        self, model: nn.Module, adapter: BackboneAdapter, inputs: Sequence[Mapping[str, Any]]
    ) -> SaturationReport:
        return SaturationReport("prune", [], 0.0, 0.0, "always prune")


class FakeAdapter(BackboneAdapter):
    name: ClassVar[str] = "fakevlm"
    model_types: ClassVar[tuple[str, ...]] = ("fake_vlm", "fake_vlm_next")
    follows: ClassVar[str] = "nothing real; test double"

    def __init__(self, detector: object = None) -> None:
        if detector is not None:
            self.saturation_detector = detector  # type: ignore[assignment]

    def language_model(self, model: nn.Module) -> nn.Module:
        return model

    def visual_token_ids(self, model: nn.Module) -> tuple[int, ...]:
        return (0,)

    def attention_parts(self, layer: nn.Module) -> AttentionParts:
        raise NotImplementedError

    def default_config(self, model: nn.Module) -> PruningConfig:
        raise NotImplementedError


def adapter(**attrs: object) -> FakeAdapter:
    """A FakeAdapter with a detector, with class attributes overridden on a subclass."""
    cls = type("Custom", (FakeAdapter,), dict(attrs))
    return cls(FakeDetector())  # type: ignore[no-any-return]


def ivr_registry(failures: Sequence[PluginFailure] = ()) -> ClassRegistry[type[IVRPolicy]]:
    return ClassRegistry[type[IVRPolicy]]("IVR policy", IVRPolicy, failures)


def failure(plugin: str, error: BaseException, **kw: Any) -> PluginFailure:
    return PluginFailure(plugin, "pkg", "1.0", error, "Traceback ...", **kw)


# ----------------------------------------------------------------------------- names
@pytest.mark.parametrize(
    ("raw", "key"),
    [("halfv", "halfv"), (" Top_K ", "top-k"), ("Qwen2_5 VL", "qwen2-5-vl"), ("a-b", "a-b")],
)
def test_normalise_name(raw: str, key: str) -> None:
    assert normalise_name(raw) == key


@given(st.text(max_size=20))
def test_normalise_name_is_idempotent(raw: str) -> None:
    once = normalise_name(raw)
    assert normalise_name(once) == once


def test_lookup_and_membership_use_normalised_names() -> None:
    reg = ivr_registry()
    info = reg.register(FakeIVR, plugin="p", package="pkg", version="1.0")
    assert (info.name, info.plugin, info.package, info.version) == ("fake-ivr", "p", "pkg", "1.0")
    assert info.kind == "IVR policy"
    assert reg.get("FAKE_IVR") is FakeIVR
    assert reg.get("fake ivr") is FakeIVR
    assert "Fake-Ivr" in reg
    assert len(reg) == 1
    assert reg.names() == ["fake-ivr"]


# ----------------------------------------------------------------------------- duplicates
def test_duplicate_names_both_owners_first_wins() -> None:
    reg = ivr_registry()
    reg.register(FakeIVR, plugin="halfv.policies", package="halfv", version="0.1.0")
    with pytest.raises(DuplicateComponentError) as info:
        reg.register(OtherIVR, plugin="x", package="pkg", version="1.0")
    assert str(info.value).startswith(
        "IVR policy 'fake-ivr' from plugin 'x' (pkg 1.0) is already registered by "
        "plugin 'halfv.policies' (halfv 0.1.0)"
    )
    assert "HALFV_DISABLE_PLUGINS=x" in str(info.value)
    assert reg.get("fake-ivr") is FakeIVR


def test_duplicate_model_type_across_adapters() -> None:
    reg = AdapterRegistry()
    reg.register(adapter(), plugin="a", package="pa", version="1")
    other = adapter(name="other", model_types=("other", "FAKE_VLM"))
    with pytest.raises(DuplicateComponentError, match=r"model_type 'FAKE_VLM'.*'fakevlm'"):
        reg.register(other, plugin="b", package="pb", version="2")
    assert reg.names() == ["fakevlm"]  # refused atomically
    assert reg.model_types() == ["fake_vlm", "fake_vlm_next"]


# ----------------------------------------------------------------------------- unknown
def test_unknown_lists_registered_names_sorted() -> None:
    reg = AdapterRegistry()
    reg.register(adapter(name="llava", model_types=("llava",)), plugin="p")
    reg.register(adapter(name="internvl", model_types=("internvl_chat",)), plugin="p")
    with pytest.raises(UnknownComponentError) as info:
        reg.get("foo")
    assert str(info.value) == "unknown adapter 'foo'; registered: internvl, llava"
    assert isinstance(info.value, LookupError)


def test_unknown_with_empty_registry() -> None:
    with pytest.raises(UnknownComponentError, match=r"registered: \(none\)$"):
        ivr_registry().get("x")


def test_unknown_mentions_failed_plugins() -> None:
    fails = [failure("broken", ImportError("no module named torchvision"))]
    with pytest.raises(UnknownComponentError) as info:
        ivr_registry(fails).get("nope")
    assert str(info.value).endswith(
        "; 1 plugin(s) failed to load: broken (pkg 1.0): ImportError: no module named "
        "torchvision; run `halfv plugins` for details"
    )


def test_failed_plugin_named_like_request_reraises_cause() -> None:
    cause = ImportError("boom")
    reg = ivr_registry([failure("my_policy", cause)])
    with pytest.raises(PluginLoadError, match=r"plugin 'my_policy' \(pkg 1\.0\) failed") as info:
        reg.get("my-policy")
    assert info.value.__cause__ is cause


def test_failure_in_other_kind_is_not_responsible() -> None:
    reg = ivr_registry([failure("mine", RuntimeError("x"), kind="adapter", stage="hook")])
    with pytest.raises(UnknownComponentError):
        reg.get("mine")


def test_refused_component_reraises_cause() -> None:
    cause = TypeError("bad")
    fails = [failure("p", cause, kind="IVR policy", component="shiny", stage="component")]
    with pytest.raises(PluginLoadError) as info:
        ivr_registry(fails).get("Shiny")
    assert info.value.__cause__ is cause


# ----------------------------------------------------------------------------- class checks
def test_class_registry_refuses_non_subclass() -> None:
    with pytest.raises(TypeError, match=r"must be a subclass of halfv\.interfaces\.IVRPolicy"):
        ivr_registry().register(int, plugin="p")


def test_class_registry_refuses_instance_with_hint() -> None:
    with pytest.raises(TypeError, match="pass the class, not an instance"):
        ivr_registry().register(FakeIVR(), plugin="p")


def test_class_registry_refuses_missing_name() -> None:
    with pytest.raises(TypeError, match=r"NamelessIVR has no `name`.*ClassVar"):
        ivr_registry().register(NamelessIVR, plugin="p")


def test_class_registry_refuses_abstract_class() -> None:
    with pytest.raises(TypeError, match=r"'abstract' .* is abstract: implement _choose"):
        ivr_registry().register(AbstractIVR, plugin="p")


def test_class_registry_runs_extra_check() -> None:
    def no_fakes(cls: type[IVRPolicy]) -> None:
        msg = f"{cls.name} refused"
        raise ValueError(msg)

    reg = ClassRegistry[type[IVRPolicy]]("IVR policy", IVRPolicy, check=no_fakes)
    with pytest.raises(ValueError, match="Fake_IVR refused"):
        reg.register(FakeIVR, plugin="p")


# ----------------------------------------------------------------------------- adapters
def test_adapter_without_detector_refused() -> None:
    with pytest.raises(TypeError) as info:
        AdapterRegistry().register(FakeAdapter(), plugin="p")
    assert str(info.value) == (
        "adapter 'fakevlm' has no saturation_detector: set it to a SaturationDetector "
        "instance, e.g. halfv.KLSaturationDetector()"
    )


def test_adapter_with_wrong_detector_type_refused() -> None:
    with pytest.raises(TypeError, match="'nope' as detector"):
        AdapterRegistry().register(FakeAdapter(detector="nope"), plugin="p")


@pytest.mark.parametrize(
    ("attrs", "error", "pattern"),
    [
        ({"name": "LLaVA"}, ValueError, "must be lowercase; use 'llava'"),
        ({"name": ""}, TypeError, "has no `name`"),
        ({"model_types": ()}, ValueError, r"model_types=\(\)"),
        ({"model_types": ["llava"]}, ValueError, "non-empty tuple"),
        ({"follows": ""}, ValueError, "has no `follows`"),
    ],
)
def test_adapter_attribute_validation(
    attrs: dict[str, object], error: type[Exception], pattern: str
) -> None:
    with pytest.raises(error, match=pattern):
        AdapterRegistry().register(adapter(**attrs), plugin="p")


def test_adapter_class_instead_of_instance_refused() -> None:
    with pytest.raises(TypeError, match="registered as a class; pass an instance"):
        AdapterRegistry().register(FakeAdapter, plugin="p")


def test_adapter_non_adapter_refused() -> None:
    with pytest.raises(TypeError, match=r"must be a halfv\.BackboneAdapter instance, got 3"):
        AdapterRegistry().register(3, plugin="p")


def test_adapter_lookup_by_name_and_model_type() -> None:
    reg = AdapterRegistry()
    fake = adapter()
    reg.register(fake, plugin="p")
    assert reg.lookup("fakevlm") is fake
    assert reg.lookup("fake_vlm_next") is fake
    assert reg.lookup("Fake-VLM") is fake
    assert reg.info_for_model_type("fake_vlm").plugin == "p"


def test_unknown_model_type_message() -> None:
    reg = AdapterRegistry()
    reg.register(adapter(), plugin="p")
    expected = (
        "no adapter for model_type 'foo'; registered model types: fake_vlm, fake_vlm_next "
        "(adapters: fakevlm)"
    )
    with pytest.raises(UnknownComponentError, match=re.escape(expected)):
        reg.lookup("foo")


def test_model_type_of_failed_plugin_reraises() -> None:
    cause = ImportError("needs transformers>=5")
    reg = AdapterRegistry([failure("gemma3", cause)])
    with pytest.raises(PluginLoadError) as info:
        reg.info_for_model_type("gemma3")
    assert info.value.__cause__ is cause
    assert "adapter 'gemma3' is unavailable" in str(info.value)


def test_failure_summary_is_one_line() -> None:
    f = PluginFailure("p", None, None, ValueError("line one\nline two"), "tb")
    assert f.summary() == "p: ValueError: line one"
    assert f.owner == "plugin 'p'"
