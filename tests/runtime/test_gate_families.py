"""The cost gate on the families main added after the gate was written.

A call the gate skips must be the unpruned model bit for bit also where the runtime does
more than gather rows: Gemma 3 (sliding windows, per-layer decode masks, sandwich freeze),
Qwen3-VL (DeepStack features added after the first layers), Qwen3.5 (linear-attention
layers) and Mistral3 (span joiners: ``[IMG_BREAK]`` inside an image's span). A skipped
SSR stage must be the IVR-only schedule on the sandwich and linear-attention layers. The
stats of a skipped call count what a pruned call counts: visual tokens without the
joiners, the span sizes budgets are shares of, every budget group (kept whole).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
import torch

import halfv
from halfv.ops.cost import CostConstants, CostModel
from halfv.runtime.gate import ENV_MIN_GAIN
from tiny import Tiny
from tiny_easy import build_mistral3
from tiny_gemma import build_gemma
from tiny_glm import build_qwen35
from tiny_qwen3 import build_qwen3_vl
from tiny_video import qwen_prompt, tiny_model

PRUNE = halfv.PruningConfig(ivr_layer=2, ivr_keep=0.5, ssr_layer=4, ssr_mode="prune", ssr_keep=0.25)
FREEZE = halfv.PruningConfig(ivr_layer=2, ivr_keep=0.5, ssr_layer=4, ssr_mode="freeze")
SAMPLES = [[4, "img", 6], [9, "img", 2]]
#: compute-bound CPU constants: every stage pays (as in test_gate.py)
PAYS = CostConstants(
    device_kind="cpu", dtype="float32", overlap=1.0, sec_per_flop=1e-9, layer_device_s=0.0,
    layer_host_s=1e-4, call_host_s=0.0, prune_host_s=0.0, pruned_layer_host_s=0.0,
    freeze_host_s=0.0, frozen_layer_host_s=0.0, stage_device_s=0.0, source="test",
)  # fmt: skip
#: host-bound: halfv's fixed cost dwarfs any saving
NEVER = dataclasses.replace(PAYS, sec_per_flop=1e-15, call_host_s=1.0)
#: the IVR stage pays, a frozen stage never does
NO_FREEZE = dataclasses.replace(PAYS, freeze_host_s=10.0)
BUILDERS: dict[str, Callable[[], Tiny]] = {
    "gemma3": build_gemma,
    "qwen3_vl": build_qwen3_vl,
    "qwen3_5": build_qwen35,
    "mistral3": build_mistral3,
}

_MODELS: dict[str, Tiny] = {}


@pytest.fixture(autouse=True)
def _gate_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_MIN_GAIN, raising=False)  # conftest turns the gate off


def _tiny(family: str) -> Tiny:
    if family not in _MODELS:
        _MODELS[family] = BUILDERS[family]()
    return _MODELS[family]


def _logits(model: torch.nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits


def _greedy(model: torch.nn.Module, inputs: dict[str, Any], n: int = 4) -> torch.Tensor:
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False)
    return out[:, inputs["input_ids"].shape[1] :]


def _ungated(config: halfv.PruningConfig) -> halfv.PruningConfig:
    return config.model_copy(update={"min_gain": None})


@pytest.mark.parametrize("family", sorted(BUILDERS))
def test_a_skipped_call_is_the_unpruned_model_and_counts_like_a_pruned_one(family: str) -> None:
    tiny = _tiny(family)
    inputs = tiny.prompt(SAMPLES)
    plain_logits, plain_tokens = _logits(tiny.model, inputs), _greedy(tiny.model, inputs)
    with halfv.apply(tiny.model, _ungated(PRUNE)) as handle:
        _logits(tiny.model, inputs)
        pruned = handle.stats
    with halfv.apply(tiny.model, PRUNE, cost_model=CostModel([NEVER])) as handle:
        assert torch.equal(_logits(tiny.model, inputs), plain_logits)
        assert torch.equal(_greedy(tiny.model, inputs), plain_tokens)
        skipped = handle.stats
        assert handle.decode_steps == 0
    assert pruned is not None
    assert skipped is not None
    assert skipped.gate is not None
    assert skipped.gate.skipped == ("ivr", "ssr")
    assert skipped.ssr_mode == "none"
    assert skipped.spans == pruned.spans
    assert skipped.span_sizes == pruned.span_sizes
    assert skipped.visual_tokens == pruned.visual_tokens
    assert skipped.visual_tokens == tuple(sum(sizes) for sizes in skipped.span_sizes)
    assert [(g.start, g.size, g.kind) for g in skipped.budget_groups] == [
        (g.start, g.size, g.kind) for g in pruned.budget_groups
    ]
    assert all(g.ivr_keep == g.ssr_keep == g.size for g in skipped.budget_groups)
    assert all(layer.visual == skipped.visual_tokens for layer in skipped.layers)
    if family == "mistral3":  # the joiners inside each span are not visual tokens
        lengths = tuple(sum(n for _, n in sample) for sample in skipped.spans)
        assert all(v < n for v, n in zip(skipped.visual_tokens, lengths, strict=True))


@pytest.mark.parametrize("family", ["gemma3", "qwen3_5"])
def test_a_skipped_freeze_is_the_ivr_only_schedule(family: str) -> None:
    tiny = _tiny(family)
    inputs = tiny.prompt(SAMPLES)
    ivr_only = FREEZE.model_copy(update={"ssr_mode": "none", "ssr_layer": None, "min_gain": None})
    with halfv.apply(tiny.model, ivr_only):
        ivr_logits, ivr_tokens = _logits(tiny.model, inputs), _greedy(tiny.model, inputs)
    with halfv.apply(tiny.model, _ungated(FREEZE)):
        frozen_logits = _logits(tiny.model, inputs)
    assert not torch.equal(frozen_logits, ivr_logits)  # the frozen stage changes the answer
    with halfv.apply(tiny.model, FREEZE, cost_model=CostModel([NO_FREEZE])) as handle:
        assert torch.equal(_logits(tiny.model, inputs), ivr_logits)
        assert torch.equal(_greedy(tiny.model, inputs), ivr_tokens)
        stats = handle.stats
    assert stats is not None
    assert stats.gate is not None
    assert stats.gate.skipped == ("ssr",)
    assert stats.ssr_mode == "none"
    assert not any(layer.frozen for layer in stats.layers)


def test_a_skipped_call_reports_each_frame_budget_of_a_video() -> None:
    tiny = tiny_model("qwen2_5_vl")
    inputs = qwen_prompt([[3, "img", 2, ("vid", 3), 4]], seed=1)
    per_frame = PRUNE.model_copy(update={"video_budget": "per_frame"})
    plain = _logits(tiny.model, inputs)
    with halfv.apply(tiny.model, per_frame, cost_model=CostModel([NEVER])) as handle:
        assert torch.equal(_logits(tiny.model, inputs), plain)
        stats = handle.stats
    assert stats is not None
    assert stats.gate is not None
    assert stats.gate.skipped == ("ivr", "ssr")
    kinds = [(g.kind, g.frames, g.ivr_keep) for g in stats.budget_groups]
    assert kinds == [("image", (0, 0), 16)] + [("frame", (f, 1), 16) for f in range(3)]
