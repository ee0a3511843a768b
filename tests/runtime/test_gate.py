"""The per-call cost gate (halfv.runtime.gate): skipped calls are the unpruned model,
bit for bit; a skipped SSR stage is the IVR-only schedule; stats report the decision."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch

import halfv
from halfv.errors import ConfigError, HalfvError
from halfv.ops.cost import CostConstants, CostModel
from halfv.runtime.gate import ENV_MIN_GAIN, env_min_gain
from tiny import BUILDERS, Tiny

FREEZE = halfv.PruningConfig(ivr_layer=2, ivr_keep=0.5, ssr_layer=3, ssr_mode="freeze")
PRUNE = halfv.PruningConfig(ivr_layer=2, ivr_keep=0.25, ssr_layer=3, ssr_mode="prune", ssr_keep=0.1)
SAMPLES = [[4, "img", 6], [9, "img", 2]]
#: compute-bound CPU constants: every stage pays
PAYS = CostConstants(
    device_kind="cpu", dtype="float32", overlap=1.0, sec_per_flop=1e-9, layer_device_s=0.0,
    layer_host_s=1e-4, call_host_s=0.0, prune_host_s=0.0, pruned_layer_host_s=0.0,
    freeze_host_s=0.0, frozen_layer_host_s=0.0, stage_device_s=0.0, source="test",
)  # fmt: skip
#: host-bound: halfv's fixed cost dwarfs any saving
NEVER = dataclasses.replace(PAYS, sec_per_flop=1e-15, call_host_s=1.0)
#: the IVR stage pays, a frozen stage never does
NO_FREEZE = dataclasses.replace(PAYS, freeze_host_s=10.0)

_MODELS: dict[str, Tiny] = {}


@pytest.fixture(autouse=True)
def _gate_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_MIN_GAIN, raising=False)  # conftest turns the gate off


def _tiny(family: str) -> Tiny:
    if family not in _MODELS:
        _MODELS[family] = BUILDERS[family](layers=4)
    return _MODELS[family]


def _logits(model: torch.nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits


def _greedy(model: torch.nn.Module, inputs: dict[str, Any], n: int = 4) -> torch.Tensor:
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False)
    return out[:, inputs["input_ids"].shape[1] :]


def _with(config: halfv.PruningConfig, **update: Any) -> halfv.PruningConfig:
    return config.model_copy(update=update)


@pytest.mark.parametrize("family", ["llava", "qwen2_5_vl"])
def test_a_skipped_call_is_the_unpruned_model_bit_for_bit(family: str) -> None:
    tiny = _tiny(family)
    inputs = tiny.prompt(SAMPLES)
    plain_logits, plain_tokens = _logits(tiny.model, inputs), _greedy(tiny.model, inputs)
    with halfv.apply(tiny.model, PRUNE, cost_model=CostModel([NEVER])) as handle:
        assert torch.equal(_logits(tiny.model, inputs), plain_logits)
        assert torch.equal(_greedy(tiny.model, inputs), plain_tokens)
        stats = handle.stats
    assert stats is not None
    assert stats.gate is not None
    assert stats.gate.skipped == ("ivr", "ssr")
    assert stats.gate.min_gain == 0.05
    assert stats.gate.constants == "cpu float32"
    assert stats.gate.stages[0].predicted_gain is not None
    assert stats.gate.stages[0].predicted_gain < 0
    assert stats.ssr_mode == "none"
    assert stats.kept_positions == {}
    assert all(layer.sequence == stats.prompt_tokens for layer in stats.layers)
    assert handle.decode_steps == 0
    report = handle.flops()  # readable for a skipped call: nothing pruned, nothing selected
    assert report.speedup_exact == pytest.approx(1.0)


def test_a_skipped_ssr_stage_is_the_ivr_only_schedule() -> None:
    tiny = _tiny("llava")
    inputs = tiny.prompt(SAMPLES)
    with halfv.apply(tiny.model, _with(FREEZE, ssr_mode="none", ssr_layer=None, min_gain=None)):
        ivr_logits, ivr_tokens = _logits(tiny.model, inputs), _greedy(tiny.model, inputs)
    with halfv.apply(tiny.model, FREEZE, cost_model=CostModel([NO_FREEZE])) as handle:
        assert torch.equal(_logits(tiny.model, inputs), ivr_logits)
        assert torch.equal(_greedy(tiny.model, inputs), ivr_tokens)
        stats = handle.stats
    assert stats is not None
    assert stats.gate is not None
    assert stats.gate.skipped == ("ssr",)
    assert stats.ssr_mode == "none"
    assert not any(layer.frozen for layer in stats.layers)
    assert list(stats.kept_positions) == [2]


def test_a_skipped_ssr_prune_is_the_ivr_only_schedule_too() -> None:
    tiny = _tiny("qwen2_5_vl")
    inputs = tiny.prompt(SAMPLES)
    with halfv.apply(tiny.model, _with(PRUNE, min_gain=0.0), cost_model=CostModel([PAYS])) as h:
        _logits(tiny.model, inputs)
        gains = {s.stage: s.predicted_gain for s in h.stats.gate.stages}  # type: ignore[union-attr]
    ivr_gain, ssr_gain = gains["ivr"], gains["ssr"]
    assert ivr_gain is not None
    assert ssr_gain is not None
    assert 0 < ssr_gain < ivr_gain
    between = _with(PRUNE, min_gain=(ivr_gain + ssr_gain) / 2)
    with halfv.apply(tiny.model, between, cost_model=CostModel([PAYS])) as handle:
        gated = _logits(tiny.model, inputs)
        assert handle.stats is not None
        assert handle.stats.gate is not None
        assert handle.stats.gate.skipped == ("ssr",)
    with halfv.apply(tiny.model, _with(PRUNE, ssr_mode="none", ssr_layer=None, min_gain=None)):
        assert torch.equal(gated, _logits(tiny.model, inputs))


def test_stages_that_pay_run_and_say_so() -> None:
    tiny = _tiny("llava")
    inputs = tiny.prompt(SAMPLES)
    with halfv.apply(tiny.model, _with(FREEZE, min_gain=None)):
        expected = _logits(tiny.model, inputs)
    with halfv.apply(tiny.model, FREEZE, cost_model=CostModel([PAYS])) as handle:
        assert torch.equal(_logits(tiny.model, inputs), expected)
        gate = handle.stats.gate  # type: ignore[union-attr]
    assert gate is not None
    assert gate.skipped == ()
    assert [(s.stage, s.layer, s.ran) for s in gate.stages] == [("ivr", 2, True), ("ssr", 3, True)]
    assert gate.predicted_ms["all"] < gate.predicted_ms["none"]


def test_min_gain_none_and_unknown_devices_never_skip(monkeypatch: pytest.MonkeyPatch) -> None:
    tiny = _tiny("llava")
    inputs = tiny.prompt(SAMPLES[:1])
    with halfv.apply(tiny.model, _with(FREEZE, min_gain=None), cost_model=CostModel([NEVER])) as h:
        _logits(tiny.model, inputs)
        gate = h.stats.gate  # type: ignore[union-attr]
    assert gate is not None
    assert gate.min_gain is None
    assert gate.skipped == ()
    gpu_only = CostModel([dataclasses.replace(NEVER, device_kind="cuda")])
    with halfv.apply(tiny.model, FREEZE, cost_model=gpu_only) as h:
        _logits(tiny.model, inputs)
        gate = h.stats.gate  # type: ignore[union-attr]
    assert gate is not None
    assert gate.constants == ""
    assert gate.skipped == ()
    monkeypatch.setenv(ENV_MIN_GAIN, "off")
    with halfv.apply(tiny.model, FREEZE, cost_model=CostModel([NEVER])) as h:
        _logits(tiny.model, inputs)
        assert h.stats.gate.skipped == ()  # type: ignore[union-attr]


def test_decisions_are_memoised_per_call_shape() -> None:
    tiny = _tiny("llava")
    with halfv.apply(tiny.model, FREEZE, cost_model=CostModel([NEVER])) as handle:
        _logits(tiny.model, tiny.prompt(SAMPLES, seed=1))
        first = handle.stats.gate  # type: ignore[union-attr]
        _logits(tiny.model, tiny.prompt(SAMPLES, seed=2))
        assert handle.stats.gate is first  # type: ignore[union-attr]


def test_the_environment_overrides_min_gain() -> None:
    assert env_min_gain(0.05, {}) == 0.05
    assert env_min_gain(0.05, {ENV_MIN_GAIN: "off"}) is None
    assert env_min_gain(None, {ENV_MIN_GAIN: "0.2"}) == 0.2
    for bad in ("1.5", "-0.1", "fast"):
        with pytest.raises(ConfigError, match=ENV_MIN_GAIN):
            env_min_gain(0.05, {ENV_MIN_GAIN: bad})


def test_min_gain_is_validated_and_cost_model_paths_are_read(tmp_path: Any) -> None:
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="min_gain"):
            halfv.PruningConfig(min_gain=bad)
    assert halfv.PruningConfig(min_gain=None).min_gain is None
    tiny = _tiny("llava")
    with pytest.raises(ConfigError, match="cost calibration"):
        halfv.apply(tiny.model, FREEZE, cost_model=tmp_path / "missing.json")
    with pytest.raises(HalfvError, match="not a CostModel"):
        halfv.apply(tiny.model, FREEZE, cost_model=3)  # type: ignore[arg-type]
