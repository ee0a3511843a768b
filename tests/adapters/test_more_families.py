"""The families added for issue #20 on tiny random models (builders in ``tiny_easy``):
LLaVA-OneVision, LLaVA-NeXT-Video, PaliGemma, Idefics3, SmolVLM and Mistral3.

Each family meets :func:`halfv.testing.check_backbone` on SDPA and eager (keep 1.0
bit-exact, pruned and frozen prefills equal to the independent masked reference, cached
decode equal to recompute, relevance equal to the model's own attention under eager);
a batch equals its samples run alone; ``halfv.apply(model)`` with no config runs the
family's default schedule through ``generate``. Videos (OneVision, NeXT-Video) are pruned
as one span each and match the masked reference, alone and beside an image. Mistral3's
images are one span each across ``[IMG_BREAK]``; PaliGemma's bidirectional prefix is
exercised with and without a causal suffix, and PaliGemma 2 is refused.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

import halfv
from halfv.adapters import Mistral3Adapter
from halfv.ops.budget import kept_count
from halfv.testing import check_backbone, check_pruned_prefill
from tiny import Tiny
from tiny_easy import BUILDERS, IMAGE_ID, MISTRAL_BREAK, MISTRAL_END, VIDEO_ID

FAMILIES = sorted(BUILDERS)
VIDEO_FAMILIES = ("llava_next_video", "llava_onevision")
ADAPTER_NAMES = {
    "llava_onevision": "llava-onevision",
    "llava_next_video": "llava-next-video",
    "paligemma": "paligemma",
    "idefics3": "idefics3",
    "smolvlm": "smolvlm",
    "mistral3": "mistral3",
}
PRUNE = halfv.PruningConfig(ivr_layer=2, ivr_keep=0.5, ssr_layer=4, ssr_mode="prune", ssr_keep=0.25)
FREEZE = halfv.PruningConfig(ivr_layer=2, ivr_keep=0.5, ssr_layer=4, ssr_mode="freeze")

_CACHE: dict[tuple[str, str], Tiny] = {}


def _tiny(family: str, attention: str = "sdpa") -> Tiny:
    """One model per family, switched between attention implementations in place."""
    key = (family, "model")
    if key not in _CACHE:
        _CACHE[key] = BUILDERS[family]()
    tiny = _CACHE[key]
    tiny.model.set_attn_implementation(attention)
    return tiny


def _logits(model: torch.nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits[:, -1]


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("family", FAMILIES)
def test_family_meets_the_backbone_contract(family: str, attention: str) -> None:
    tiny = _tiny(family, attention)
    assert halfv.get_adapter_for(tiny.model).name == ADAPTER_NAMES[family]
    check_backbone(tiny.model, tiny.prompt([[3, "img", 6], [2, "img", 1, "img", 4]], seed=2))


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("family", VIDEO_FAMILIES)
def test_video_prompts_equal_the_masked_reference(family: str, attention: str) -> None:
    tiny = _tiny(family, attention)
    for samples in ([[4, "vid", 5]], [[2, "img", 3, "vid", 4]]):
        inputs = tiny.prompt(samples, seed=3)
        ids = inputs["input_ids"][0]
        per_video = int((ids == VIDEO_ID).sum())
        for config in (PRUNE, FREEZE):
            stats = check_pruned_prefill(tiny.model, inputs, config)
            video_start = int((ids == VIDEO_ID).nonzero()[0])
            assert (video_start, per_video) in stats.spans[0]  # the whole video: one span
            kept = stats.kept_positions[2][0]
            in_video = [p for p in kept if int(ids[p]) == VIDEO_ID]
            assert len(in_video) == kept_count(per_video, 0.5)
            if config.ssr_mode == "prune":
                in_video = [p for p in stats.kept_positions[4][0] if int(ids[p]) == VIDEO_ID]
                assert len(in_video) == kept_count(per_video, 0.25)
    mixed = tiny.prompt([[2, "img", 3, "vid", 4]], seed=3)
    assert int((mixed["input_ids"] == IMAGE_ID).sum()) == tiny.visual_per_image


_SEQUENCE_KEYS = ("input_ids", "attention_mask", "token_type_ids")


def _sample(tiny: Tiny, batch: dict[str, Any], samples: list[list[Any]], i: int) -> dict[str, Any]:
    """Sample ``i`` of ``batch`` alone: its unpadded rows and its own visual tensors."""
    pad = int((batch["attention_mask"][i] == 0).sum())
    out = {k: batch[k][i : i + 1, pad:] for k in _SEQUENCE_KEYS if k in batch}
    if tiny.family in ("idefics3", "smolvlm"):  # [B, images, ...]: zero images are padding
        out["pixel_values"] = batch["pixel_values"][i : i + 1]
        return out
    for kind, keys in (
        ("img", ("pixel_values", "image_sizes")),
        ("vid", ("pixel_values_videos",)),
    ):
        counts = [sum(seg == kind for seg in s) for s in samples]
        first, n = sum(counts[:i]), counts[i]
        for key in keys:
            if key in batch and n:
                out[key] = batch[key][first : first + n]
    return out


@pytest.mark.parametrize("config", [PRUNE, FREEZE], ids=["prune", "freeze"])
@pytest.mark.parametrize("family", FAMILIES)
def test_batch_equals_single(family: str, config: halfv.PruningConfig) -> None:
    tiny = _tiny(family)
    last = "vid" if family in VIDEO_FAMILIES else "img"
    samples: list[list[Any]] = [[3, "img", 6], [2, "img", 1, last, 4]]
    batch = tiny.prompt(samples, seed=1)
    with halfv.apply(tiny.model, config) as handle:
        batch_logits = _logits(tiny.model, batch)
        batch_stats = handle.stats
        assert batch_stats is not None
        for i in range(len(samples)):
            pad = int((batch["attention_mask"][i] == 0).sum())
            single_logits = _logits(tiny.model, _sample(tiny, batch, samples, i))
            torch.testing.assert_close(batch_logits[i : i + 1], single_logits, atol=1e-4, rtol=1e-4)
            single_stats = handle.stats
            assert single_stats is not None
            for layer, kept in single_stats.kept_positions.items():
                batch_kept = tuple(p for p in batch_stats.kept_positions[layer][i] if p >= pad)
                assert batch_kept == tuple(p + pad for p in kept[0])


@pytest.mark.parametrize("family", FAMILIES)
def test_default_schedule_runs_generate(family: str) -> None:
    tiny = _tiny(family)
    adapter = halfv.get_adapter_for(tiny.model)
    adapter.default_config(tiny.model).check_depth(adapter.num_layers(tiny.model))
    inputs = tiny.prompt([[2, "img", 3]])
    with halfv.apply(tiny.model) as handle, torch.no_grad():
        out = tiny.model.generate(**inputs, max_new_tokens=3, do_sample=False)
        stats = handle.stats
    assert out.shape[1] == inputs["input_ids"].shape[1] + 3
    assert stats is not None
    assert stats.kept_visual_per_layer()[-1] < stats.visual_tokens[0]


# --------------------------------------------------------------------------- Mistral3
def test_mistral3_budgets_each_image_across_row_breaks() -> None:
    tiny = _tiny("mistral3")
    inputs = tiny.prompt([[3, "img", 2, "img", 4]])
    ids = inputs["input_ids"][0]
    breaks = set((ids == MISTRAL_BREAK).nonzero().flatten().tolist())
    with halfv.apply(tiny.model, PRUNE) as handle:
        _logits(tiny.model, inputs)
        stats = handle.stats
    assert stats is not None
    ends = (ids == MISTRAL_END).nonzero().flatten().tolist()
    starts = [3, ends[0] + 3]  # 2 text tokens between the images
    assert stats.spans[0] == tuple((s, e - s) for s, e in zip(starts, ends, strict=True))
    assert stats.span_sizes[0] == (16, 16)
    for layer, ratio in ((2, 0.5), (4, 0.25)):
        kept = stats.kept_positions[layer][0]
        assert breaks <= set(kept)  # joiners are never pruned
        for start, end in zip(starts, ends, strict=True):
            visual = [p for p in kept if start <= p < end and int(ids[p]) != MISTRAL_BREAK]
            assert len(visual) == kept_count(16, ratio)  # one budget per image, not per row


def test_mistral3_without_joiners_budgets_rows() -> None:
    """What the joiner fixes: with none, each row of 4 is its own span, and the default
    5 % SSR keeps one token of each row (nothing is removed at 4 tokens a row)."""

    class RowsAdapter(Mistral3Adapter):
        def span_joiners(self, model: torch.nn.Module) -> frozenset[int]:
            return frozenset()

    tiny = _tiny("mistral3")
    inputs = tiny.prompt([[3, "img", 2, "img", 4]])
    ssr = halfv.PruningConfig(ivr_layer=2, ivr_keep=1.0, ssr_layer=4, ssr_mode="prune")
    with halfv.apply(tiny.model, ssr, adapter=RowsAdapter()) as handle:
        _logits(tiny.model, inputs)
        rows = handle.stats
    with halfv.apply(tiny.model, ssr) as handle:
        _logits(tiny.model, inputs)
        images = handle.stats
    assert rows is not None
    assert images is not None
    assert [n for _, n in rows.spans[0]] == [4] * 8
    assert rows.kept_visual_per_layer()[-1] == 8
    assert images.kept_visual_per_layer()[-1] == 2 * kept_count(16, 0.05)


def test_mistral3_break_id_sources() -> None:
    tiny = _tiny("mistral3")
    assert Mistral3Adapter().span_joiners(tiny.model) == {MISTRAL_BREAK}  # tekken layout
    assert Mistral3Adapter(image_break_token_id=77).span_joiners(tiny.model) == {77}
    config = tiny.model.config
    config.image_token_id = 55
    try:
        with pytest.raises(halfv.UnsupportedModelError, match="image_break_token_id"):
            Mistral3Adapter().span_joiners(tiny.model)
        config.image_break_token_id = 56
        assert Mistral3Adapter().span_joiners(tiny.model) == {56}
    finally:
        config.image_token_id = 10
        if hasattr(config, "image_break_token_id"):
            del config.image_break_token_id


def test_pixtral_as_llava_budgets_each_image() -> None:
    """Pixtral-12B ships as a ``llava`` model: the LLaVA adapter joins its rows too."""
    from tiny_easy import build_pixtral_llava

    tiny = build_pixtral_llava()
    inputs = tiny.prompt([[3, "img", 2, "img", 4], [2, "img", 5]], seed=5)
    assert halfv.get_adapter_for(tiny.model).span_joiners(tiny.model) == {MISTRAL_BREAK}
    stats = check_pruned_prefill(tiny.model, inputs, PRUNE.model_copy(update={"ssr_layer": 3}))
    assert stats.span_sizes == ((16, 16), (16,))
    assert stats.kept_visual_per_layer(1)[-1] == kept_count(16, 0.25)


# --------------------------------------------------------------------------- PaliGemma
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_paligemma_prefix_and_suffix(attention: str) -> None:
    """A prompt with a causal suffix after the bidirectional prefix (token types 0, then
    1); the prefix really is bidirectional (dropping token_type_ids changes the logits)."""
    tiny = BUILDERS["paligemma"](suffix=3)
    tiny.model.set_attn_implementation(attention)
    inputs = tiny.prompt([[3, "img", 6], [2, "img", "img", 4]], seed=4)
    causal = {k: v for k, v in inputs.items() if k != "token_type_ids"}
    assert not torch.allclose(_logits(tiny.model, inputs), _logits(tiny.model, causal))
    check_backbone(tiny.model, inputs)


def test_paligemma2_is_refused() -> None:
    from transformers import PaliGemmaConfig, PaliGemmaForConditionalGeneration

    cfg = PaliGemmaConfig(
        vision_config={
            "model_type": "siglip_vision_model",
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 28,
            "patch_size": 14,
            "projection_dim": 32,
        },
        text_config={
            "model_type": "gemma2",
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 4,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "head_dim": 16,
            "vocab_size": 1000,
        },
        image_token_index=998,
        projection_dim=32,
    )
    model = PaliGemmaForConditionalGeneration(cfg).eval()
    with pytest.raises(halfv.UnsupportedModelError, match="gemma2"):
        halfv.apply(model)
