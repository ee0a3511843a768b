"""The example plugin (``plugins/halfv-example``): discovery and a tiny VipLLaVA end to end.

Needs the plugin installed (``pip install -e ./plugins/halfv-example``); the module is
skipped otherwise.
"""

from __future__ import annotations

import importlib.metadata
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import halfv
from halfv.plugins import reset_components

halfv_example = pytest.importorskip(
    "halfv_example",
    reason="the example plugin is not installed: pip install -e ./plugins/halfv-example",
)

pytestmark = pytest.mark.plugin

IMAGE = 998
IMAGE_SIZE = 112
PER_IMAGE = (IMAGE_SIZE // 14) ** 2  # 64 patch tokens per image (the CLS token is dropped)
LAYERS = 6
KEEP_ALL = halfv.PruningConfig(
    ivr_layer=2, ivr_keep=1.0, ssr_layer=4, ssr_mode="prune", ssr_keep=1.0
)
PRUNE = halfv.PruningConfig(ivr_layer=2, ivr_keep=0.25, ssr_layer=4, ssr_mode="prune", ssr_keep=0.1)


@pytest.fixture(scope="module", autouse=True)
def fresh_components() -> Iterator[None]:
    """Rediscover plugins with no HALFV_* switches set, and again after the module."""
    with pytest.MonkeyPatch.context() as mp:
        for name in ("HALFV_DISABLE_PLUGINS", "HALFV_LOAD_PLUGINS", "HALFV_TRACE_PLUGINS"):
            mp.delenv(name, raising=False)
        reset_components()
        yield
    reset_components()


@pytest.fixture(scope="module")
def model() -> nn.Module:
    """A tiny random-init ``VipLlavaForConditionalGeneration`` (6 layers, hidden 64)."""
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        VipLlavaConfig,
        VipLlavaForConditionalGeneration,
    )

    torch.manual_seed(0)
    config = VipLlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=IMAGE_SIZE,
            patch_size=14,
        ),
        text_config=LlamaConfig(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=LAYERS,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=1000,
            max_position_embeddings=4096,
        ),
        image_token_index=IMAGE,
        vision_feature_layer=[-1, -2],  # the projector reads several CLIP layers
    )
    return VipLlavaForConditionalGeneration(config).eval()


def _prompt(before: int = 5, after: int = 7, seed: int = 0) -> dict[str, Tensor]:
    """``text * before, <image> * 64, text * after``."""
    gen = torch.Generator().manual_seed(seed)
    text = torch.randint(10, 900, (before + after,), generator=gen).tolist()
    ids = [*text[:before], *[IMAGE] * PER_IMAGE, *text[before:]]
    return {
        "input_ids": torch.tensor([ids]),
        "attention_mask": torch.ones(1, len(ids), dtype=torch.long),
        "pixel_values": torch.randn(1, 3, IMAGE_SIZE, IMAGE_SIZE, generator=gen),
    }


def _config_only(model_type: str) -> nn.Module:
    """A module whose ``config.model_type`` is ``model_type`` (for adapter lookup)."""
    module = nn.Module()
    module.config = type("Config", (), {"model_type": model_type})()  # type: ignore[assignment]
    return module


def _logits(model: nn.Module, inputs: dict[str, Any]) -> Tensor:
    with torch.no_grad():
        return model(**inputs).logits[:, -1]


def _greedy(model: nn.Module, inputs: dict[str, Any], n: int = 4) -> Tensor:
    with torch.no_grad():
        return model.generate(**inputs, max_new_tokens=n, do_sample=False)


def test_entry_point_is_declared() -> None:
    eps = importlib.metadata.entry_points(group="halfv", name="vipllava")
    assert [ep.value for ep in eps] == ["halfv_example.plugin"]


def test_halfv_discovers_the_adapter() -> None:
    adapter = halfv.get_adapter("vipllava")
    assert isinstance(adapter, halfv_example.VipLlavaAdapter)
    assert halfv.get_adapter_for(_config_only("vipllava")) is adapter
    assert isinstance(adapter.saturation_detector, halfv.KLSaturationDetector)
    (info,) = [c for c in halfv.list_components("adapter") if c.name == "vipllava"]
    assert info.obj is adapter
    assert (info.plugin, info.package) == ("vipllava", "halfv-example")
    assert info.version == importlib.metadata.version("halfv-example")
    assert [f for f in halfv.plugin_failures() if f.plugin == "vipllava"] == []


def test_adapter_reads_the_model(model: nn.Module) -> None:
    adapter = halfv.get_adapter_for(model)
    assert isinstance(adapter, halfv_example.VipLlavaAdapter)
    assert adapter.visual_token_ids(model) == (IMAGE,)
    assert adapter.num_layers(model) == LAYERS
    parts = adapter.attention_parts(adapter.decoder_layers(model)[0])
    assert (parts.num_heads, parts.num_kv_heads, parts.head_dim) == (4, 2, 16)


def test_default_schedule_is_llavas() -> None:
    ours = halfv_example.VipLlavaAdapter
    builtin = type(halfv.get_adapter("llava"))
    assert ours.reference_layers == builtin.reference_layers == 32
    assert ours.reference_schedule == builtin.reference_schedule
    schedule = ours.reference_schedule
    assert (
        schedule.ivr_layer,
        schedule.ivr_keep,
        schedule.ivr_policy_options["attention_share"],
    ) == (3, 0.5, 0.2)
    assert (schedule.ssr_layer, schedule.ssr_mode) == (15, "freeze")


def test_default_config_runs(model: nn.Module) -> None:
    inputs = _prompt()
    with halfv.apply(model) as handle:
        out = _greedy(model, inputs, n=2)
        stats = handle.stats
        config = handle.config
    assert config == halfv.get_adapter_for(model).default_config(model)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 2
    assert stats is not None
    assert stats.kept_visual_per_layer()[config.ivr_layer] == halfv.kept_count(
        PER_IMAGE, config.ivr_keep
    )


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_keep_all_is_exact(model: nn.Module, attention: str) -> None:
    model.set_attn_implementation(attention)
    try:
        inputs = _prompt(seed=1)
        ref_logits, ref_tokens = _logits(model, inputs), _greedy(model, inputs)
        with halfv.apply(model, KEEP_ALL) as handle:
            assert torch.equal(_logits(model, inputs), ref_logits)
            assert torch.equal(_greedy(model, inputs), ref_tokens)
            assert handle.stats is not None
            assert handle.stats.kept_visual_per_layer() == [PER_IMAGE] * LAYERS
        with halfv.apply(model, PRUNE):  # the comparison above is sensitive to pruning
            assert not torch.equal(_logits(model, inputs), ref_logits)
    finally:
        model.set_attn_implementation("sdpa")


def test_pruned_generate_and_budget(model: nn.Module) -> None:
    inputs = _prompt(seed=2)
    prompt_len = inputs["input_ids"].shape[1]
    ivr_kept = max(1, PER_IMAGE * 25 // 100)  # floor(64 * 0.25) = 16
    ssr_kept = max(1, PER_IMAGE * 10 // 100)  # floor(64 * 0.1) = 6
    with halfv.apply(model, PRUNE) as handle:
        first = _logits(model, inputs).argmax(-1)
        out = _greedy(model, inputs, n=4)
        stats = handle.stats
        assert handle.decode_steps == 3  # the first new token comes from the prefill
    assert out.shape == (1, prompt_len + 4)
    assert out[0, prompt_len] == first[0]
    assert stats is not None
    assert stats.prompt_tokens == (prompt_len,)
    assert stats.visual_tokens == (PER_IMAGE,)
    assert stats.spans == (((5, PER_IMAGE),),)  # 5 text tokens first
    assert stats.kept_visual_per_layer() == [PER_IMAGE] * 2 + [ivr_kept] * 2 + [ssr_kept] * 2
    text = prompt_len - PER_IMAGE
    assert [len(stats.kept_positions[layer][0]) for layer in (2, 4)] == [
        text + ivr_kept,
        text + ssr_kept,
    ]


# ----------------------------------------------------------------------------- the tutorial
TUTORIAL = Path(__file__).resolve().parents[2] / "docs" / "writing-an-adapter.md"
REPO = TUTORIAL.parents[1]


def _marked_block(marker: str) -> str:
    """The fenced code block right after ``<!-- marker -->`` in the tutorial."""
    text = TUTORIAL.read_text(encoding="utf-8")
    found = re.search(rf"<!-- {re.escape(marker)} -->\n```\w*\n(.*?)```\n", text, re.DOTALL)
    assert found is not None, f"{TUTORIAL.name} has no code block after <!-- {marker} -->"
    return found.group(1)


def test_tutorial_shows_the_plugin_verbatim() -> None:
    path = "plugins/halfv-example/src/halfv_example/plugin.py"
    assert _marked_block(f"include: {path}") == (REPO / path).read_text(encoding="utf-8")


def test_tutorial_scratch_adapter_works(model: nn.Module) -> None:
    namespace: dict[str, Any] = {}
    exec(_marked_block("test: from-scratch-adapter"), namespace)  # noqa: S102 -- our own docs
    scratch = namespace["ScratchVipLlavaAdapter"]()
    plugin = halfv.get_adapter_for(model)
    assert scratch.default_config(model) == plugin.default_config(model)
    assert scratch.visual_token_ids(model) == plugin.visual_token_ids(model)
    inputs = _prompt(seed=3)
    ref = _logits(model, inputs)
    with halfv.apply(model, KEEP_ALL, adapter=scratch) as handle:
        assert handle.pipeline.adapter is scratch
        assert torch.equal(_logits(model, inputs), ref)
    results = []
    for adapter in (scratch, plugin):
        with halfv.apply(model, PRUNE, adapter=adapter) as handle:
            results.append((_logits(model, inputs), handle.stats))
    (scratch_logits, scratch_stats), (plugin_logits, plugin_stats) = results
    assert scratch_stats is not None
    assert scratch_stats == plugin_stats
    assert torch.equal(scratch_logits, plugin_logits)
