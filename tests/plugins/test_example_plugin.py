"""The example plugin (``plugins/halfv-example``): discovery and a tiny Qwen2-VL end to end.

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

IMAGE, VIDEO, VISION_START, VISION_END = 995, 996, 993, 994
GRID = 16  # patches per side; 2x2 merge -> 64 visual tokens per image
PER_IMAGE = GRID * GRID // 4
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
    """A tiny random-init ``Qwen2VLForConditionalGeneration`` (6 layers, hidden 64)."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    torch.manual_seed(0)
    config = Qwen2VLConfig(
        vision_config={
            "depth": 1,
            "embed_dim": 32,
            "hidden_size": 64,
            "mlp_ratio": 2,
            "num_heads": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        text_config={
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": LAYERS,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "vocab_size": 1000,
            "max_position_embeddings": 4096,
            # head_dim 16: the three mrope sections must sum to head_dim / 2
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 1e4,
                "mrope_section": [2, 3, 3],
            },
        },
        image_token_id=IMAGE,
        video_token_id=VIDEO,
        vision_start_token_id=VISION_START,
        vision_end_token_id=VISION_END,
    )
    return Qwen2VLForConditionalGeneration(config).eval()


def _prompt(before: int = 5, after: int = 7, seed: int = 0) -> dict[str, Tensor]:
    """``text * before, <vision_start>, <image_pad> * 64, <vision_end>, text * after``."""
    gen = torch.Generator().manual_seed(seed)
    text = torch.randint(10, 900, (before + after,), generator=gen).tolist()
    ids = [*text[:before], VISION_START, *[IMAGE] * PER_IMAGE, VISION_END, *text[before:]]
    types = [0] * (before + 1) + [1] * PER_IMAGE + [0] * (after + 1)
    return {
        "input_ids": torch.tensor([ids]),
        "attention_mask": torch.ones(1, len(ids), dtype=torch.long),
        "mm_token_type_ids": torch.tensor([types]),
        "pixel_values": torch.randn(GRID * GRID, 3 * 2 * 14 * 14, generator=gen),
        "image_grid_thw": torch.tensor([[1, GRID, GRID]]),
    }


def _logits(model: nn.Module, inputs: dict[str, Any]) -> Tensor:
    with torch.no_grad():
        return model(**inputs).logits[:, -1]


def _greedy(model: nn.Module, inputs: dict[str, Any], n: int = 4) -> Tensor:
    with torch.no_grad():
        return model.generate(**inputs, max_new_tokens=n, do_sample=False)


def test_entry_point_is_declared() -> None:
    eps = importlib.metadata.entry_points(group="halfv", name="qwen2-vl")
    assert [ep.value for ep in eps] == ["halfv_example.plugin"]


def test_halfv_discovers_the_adapter() -> None:
    adapter = halfv.get_adapter("qwen2_vl")
    assert isinstance(adapter, halfv_example.Qwen2VLAdapter)
    assert halfv.get_adapter("qwen2-vl") is adapter
    assert isinstance(adapter.saturation_detector, halfv.KLSaturationDetector)
    (info,) = [c for c in halfv.list_components("adapter") if c.name == "qwen2-vl"]
    assert info.obj is adapter
    assert (info.plugin, info.package) == ("qwen2-vl", "halfv-example")
    assert info.version == importlib.metadata.version("halfv-example")
    assert [f for f in halfv.plugin_failures() if f.plugin == "qwen2-vl"] == []


def test_adapter_reads_the_model(model: nn.Module) -> None:
    adapter = halfv.get_adapter_for(model)
    assert isinstance(adapter, halfv_example.Qwen2VLAdapter)
    assert adapter.visual_token_ids(model) == (IMAGE, VIDEO)
    assert adapter.num_layers(model) == LAYERS
    parts = adapter.attention_parts(adapter.decoder_layers(model)[0])
    assert (parts.num_heads, parts.num_kv_heads, parts.head_dim) == (4, 2, 16)


def test_default_schedule_is_qwen25s() -> None:
    ours = halfv_example.Qwen2VLAdapter
    builtin = type(halfv.get_adapter("qwen2_5_vl"))
    assert ours.reference_layers == builtin.reference_layers == 28
    assert ours.reference_schedule == builtin.reference_schedule
    schedule = ours.reference_schedule
    assert (
        schedule.ivr_layer,
        schedule.ivr_keep,
        schedule.ivr_policy_options["attention_share"],
    ) == (2, 0.25, 0.1)
    assert (schedule.ssr_layer, schedule.ssr_mode, schedule.ssr_keep) == (21, "prune", 0.05)


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
    assert stats.spans == (((6, PER_IMAGE),),)  # 5 text tokens and <|vision_start|> first
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
    scratch = namespace["ScratchQwen2VLAdapter"]()
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
