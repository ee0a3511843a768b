"""halfv on Qwen2-VL, Qwen3-VL (DeepStack) and Qwen3-VL-MoE: tiny random-init models.

Each family runs halfv's backbone contract (:func:`halfv.testing.check_backbone`: keep 1.0
bit-exact, pruned and frozen prefills equal the masked reference built from the model's
own layers, cached decode equals recompute, and under eager attention SSR keeps the
model's own top-attended tokens), on image, video and mixed prompts. The Qwen3 families
add DeepStack features after decoder layers 0-2, so the contract's IVR layer 2 and an IVR
layer 1 prune at or before the last DeepStack layer.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

import halfv
from halfv._compat import cache_kwarg
from halfv.errors import UnsupportedModelError
from halfv.testing import (
    check_backbone,
    check_cached_decode,
    check_pruned_prefill,
    check_relevance_follows_attention,
)
from halfv.testing.reference import masked_reference
from tiny_qwen3 import BUILDERS, DEEPSTACK, LAYERS, QwenTiny

FAMILIES = sorted(BUILDERS)
QWEN3 = ("qwen3_vl", "qwen3_vl_moe")
MIXED = [[3, "img", 2, "vid", 4]]
PROMPTS = {"image": [[4, "img", 5]], "video": [[2, "vid", 3]], "mixed": MIXED}
EARLY = halfv.PruningConfig(ivr_layer=1, ivr_keep=0.5, ssr_layer=3, ssr_mode="prune", ssr_keep=0.25)
EARLY_FREEZE = halfv.PruningConfig(ivr_layer=1, ivr_keep=0.5, ssr_layer=2, ssr_mode="freeze")

_MODELS: dict[tuple[str, str], QwenTiny] = {}


def _tiny(family: str, attention: str = "sdpa") -> QwenTiny:
    key = (family, attention)
    if key not in _MODELS:
        built = BUILDERS[family]()
        built.model.set_attn_implementation(attention)
        _MODELS[key] = built
    return _MODELS[key]


def _logits(model: torch.nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits[:, -1]


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("family", FAMILIES)
def test_backbone_contract(family: str, attention: str) -> None:
    tiny = _tiny(family, attention)
    check_backbone(tiny.model, tiny.prompt(MIXED))


@pytest.mark.parametrize("prompt", sorted(PROMPTS))
@pytest.mark.parametrize("family", FAMILIES)
def test_image_video_and_mixed_prompts(family: str, prompt: str) -> None:
    tiny = _tiny(family)
    inputs = tiny.prompt(PROMPTS[prompt], seed=1)
    stats = check_pruned_prefill(tiny.model, inputs, EARLY)
    visual = {"image": tiny.per_image, "video": tiny.per_video}
    expected = sum(visual[k] for k in ("image", "video") if prompt in (k, "mixed"))
    assert stats.visual_tokens == (expected,)
    assert stats.kept_visual_per_layer()[0] == expected
    assert stats.kept_visual_per_layer()[1] < expected


@pytest.mark.parametrize("family", FAMILIES)
def test_relevance_follows_attention_on_video_frames(family: str) -> None:
    """Eager attention, a video of two temporal patches between text: SSR keeps the
    model's own top-attended tokens (the mrope tables carry the frames' T/H/W positions)."""
    tiny = _tiny(family, "eager")
    check_relevance_follows_attention(tiny.model, tiny.prompt([[3, "vid", 5]], seed=8))


@pytest.mark.parametrize("config", [EARLY, EARLY_FREEZE], ids=["prune", "freeze"])
@pytest.mark.parametrize("family", QWEN3)
def test_ivr_at_or_before_the_last_deepstack_layer(
    family: str, config: halfv.PruningConfig
) -> None:
    """IVR at layer 1, two DeepStack layers after it (the model used to raise IndexError)."""
    assert config.ivr_layer <= max(DEEPSTACK)
    tiny = _tiny(family)
    adapter = halfv.get_adapter_for(tiny.model)
    spec = adapter.token_inputs(tiny.model)
    assert spec is not None
    assert spec.module is adapter.language_model(tiny.model)
    assert spec.max_layers == len(DEEPSTACK)
    inputs = tiny.prompt(MIXED, seed=2)
    check_pruned_prefill(tiny.model, inputs, config)
    check_cached_decode(tiny.model, inputs, config)


@pytest.mark.parametrize("family", QWEN3)
def test_deepstack_features_reach_the_kept_rows(family: str) -> None:
    """The DeepStack adds matter after the prune: dropping them changes the pruned output."""
    tiny = _tiny(family)
    inputs = tiny.prompt(MIXED, seed=3)
    with halfv.apply(tiny.model, EARLY) as handle:
        pruned = _logits(tiny.model, inputs)
        assert handle.stats is not None
        assert handle.stats.kept_visual_per_layer()[max(DEEPSTACK)] < handle.stats.visual_tokens[0]
        layers = halfv.get_adapter_for(tiny.model).decoder_layers(tiny.model)
        hook = layers[max(DEEPSTACK)]._forward_hooks
        assert len(hook) == 1
        (add,) = hook.values()
        hook.clear()  # without the last layer's add, the output must change
        try:
            without = _logits(tiny.model, inputs)
        finally:
            layers[max(DEEPSTACK)].register_forward_hook(add)
    assert not torch.equal(pruned, without)


@pytest.mark.parametrize("family", FAMILIES)
def test_batch_equals_single(family: str) -> None:
    """A left-padded ragged batch (image / video + image) prunes each sample as alone."""
    tiny = _tiny(family)
    samples: list[list[Any]] = [[3, "img", 6], [2, "vid", 1, "img", 3]]
    batch = tiny.prompt(samples, seed=4)
    with halfv.apply(tiny.model, EARLY) as handle:
        together = _logits(tiny.model, batch)
        assert handle.stats is not None
        assert handle.stats.visual_tokens == (tiny.per_image, tiny.per_video + tiny.per_image)
        for b in range(len(samples)):
            alone = _logits(tiny.model, _single_from_batch(tiny, samples, b, seed=4))
            torch.testing.assert_close(alone, together[b : b + 1], atol=1e-5, rtol=1e-5)


def _single_from_batch(
    tiny: QwenTiny, samples: list[list[Any]], b: int, seed: int
) -> dict[str, Any]:
    """Sample ``b`` of ``tiny.prompt(samples, seed)``, unpadded, with its own pixels."""
    batch = tiny.prompt(samples, seed=seed)
    keep = batch["attention_mask"][b].bool()
    out = {
        k: batch[k][b : b + 1, keep] for k in ("input_ids", "attention_mask", "mm_token_type_ids")
    }
    images_before = sum(s.count("img") for s in samples[:b])
    videos_before = sum(s.count("vid") for s in samples[:b])
    for name, grid_name, before, kind in (
        ("pixel_values", "image_grid_thw", images_before, "img"),
        ("pixel_values_videos", "video_grid_thw", videos_before, "vid"),
    ):
        count = samples[b].count(kind)
        if not count:
            continue
        grids = batch[grid_name]
        sizes = [int(g.prod()) for g in grids]
        start = sum(sizes[:before])
        out[name] = batch[name][start : start + sum(sizes[before : before + count])]
        out[grid_name] = grids[before : before + count]
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_hand_written_decode_loop_equals_recompute(family: str) -> None:
    """Prefill, then feed each greedy token back with the cache (no generate): every step's
    logits equal the masked reference over the grown prompt."""
    from transformers import DynamicCache

    tiny = _tiny(family)
    inputs = tiny.prompt(MIXED, seed=5)
    t = int(inputs["input_ids"].shape[1])
    adapter = halfv.get_adapter_for(tiny.model)
    steps, tokens = [], []
    with halfv.apply(tiny.model, EARLY) as handle, torch.no_grad():
        cache = DynamicCache(config=tiny.model.config)
        logits = tiny.model(**inputs, **{cache_kwarg(): cache}).logits[:, -1]
        stats = handle.stats
        for _ in range(3):
            token = logits.argmax(-1, keepdim=True)
            tokens.append(token)
            logits = tiny.model(input_ids=token, **{cache_kwarg(): cache}).logits[:, -1]
            steps.append(logits)
        assert handle.decode_steps == 3
        assert cache.layers[-1].keys.shape[-2] < t + 3  # the pruned layers' cache is shorter
    assert stats is not None
    for n, step_logits in enumerate(steps, start=1):
        grown = dict(inputs)
        new = torch.cat(tokens[:n], dim=1)
        grown["input_ids"] = torch.cat([inputs["input_ids"], new], dim=1)
        grown["attention_mask"] = torch.ones_like(grown["input_ids"])
        grown["mm_token_type_ids"] = torch.cat(
            [inputs["mm_token_type_ids"], torch.zeros_like(new)], dim=1
        )
        kept = {
            layer: [(*p, *range(t, t + n)) for p in per_sample]
            for layer, per_sample in stats.kept_positions.items()
        }
        ref = masked_reference(
            tiny.model,
            grown,
            kept,
            layers=adapter.decoder_layers(tiny.model),
            visual_ids=adapter.visual_token_ids(tiny.model),
        ).logits[:, -1]
        torch.testing.assert_close(step_logits, ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_default_schedule_end_to_end(family: str) -> None:
    """``halfv.apply(model)``: the adapter's Qwen rule scaled to 6 layers, through generate."""
    tiny = _tiny(family)
    adapter = halfv.get_adapter_for(tiny.model)
    assert adapter.model_types == (family,)
    default = adapter.default_config(tiny.model)
    assert default == halfv.adapters.scale_schedule(
        halfv.get_adapter("qwen2_5_vl").default_config(_qwen25_depth(28)), 28, LAYERS
    )
    assert (default.ivr_layer, default.ssr_layer, default.ssr_mode) == (1, 5, "prune")
    inputs = tiny.prompt(MIXED, seed=6)
    visual = tiny.per_image + tiny.per_video
    with halfv.apply(tiny.model) as handle, torch.no_grad():
        out = tiny.model.generate(**inputs, max_new_tokens=3, do_sample=False)
        stats = handle.stats
        assert handle.config == default
    assert out.shape[1] == inputs["input_ids"].shape[1] + 3
    assert stats is not None
    (spans,) = stats.spans  # Qwen3-VL: one span per temporal patch of the video
    assert len(spans) == (2 if family == "qwen2_vl" else 3)
    ivr = sum(halfv.kept_count(n, 0.25) for _, n in spans)
    ssr = sum(halfv.kept_count(n, 0.05) for _, n in spans)
    assert stats.kept_visual_per_layer() == [visual] + [ivr] * 4 + [ssr]


def _qwen25_depth(layers: int) -> Any:
    """A stand-in model of ``layers`` decoder layers for ``default_config``."""

    class _Stub(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = torch.nn.Module()
            self.model.language_model = torch.nn.Module()
            self.model.language_model.layers = torch.nn.ModuleList(
                torch.nn.Identity() for _ in range(layers)
            )

    return _Stub()


def test_moe_router_logits_in_a_pruned_prefill_are_refused() -> None:
    tiny = _tiny("qwen3_vl_moe")
    inputs = tiny.prompt(MIXED, seed=7)
    keep_all = halfv.PruningConfig(ivr_layer=1, ivr_keep=1.0, ssr_layer=None)
    with torch.no_grad():
        plain = tiny.model(**inputs, output_router_logits=True)
    with halfv.apply(tiny.model, EARLY), torch.no_grad():
        with pytest.raises(UnsupportedModelError, match="output_router_logits"):
            tiny.model(**inputs, output_router_logits=True)
        _logits(tiny.model, inputs)  # the runtime is usable after the refusal
    with halfv.apply(tiny.model, keep_all), torch.no_grad():  # nothing removed: allowed
        same = tiny.model(**inputs, output_router_logits=True)
    assert torch.equal(same.logits, plain.logits)
    assert torch.equal(same.aux_loss, plain.aux_loss)


def test_stage_token_rows_follow_the_survivors() -> None:
    """A ragged stage: sample 1 keeps two rows behind a dummy slot that points at a row
    with features (the dummy must receive none)."""
    from halfv.runtime.layout import StageLayout
    from halfv.runtime.token_inputs import PendingTokenInputs, stage_token_rows

    mask = torch.tensor([[0, 1, 1, 0, 1], [0, 0, 1, 1, 0]], dtype=torch.bool)
    features = torch.arange(5.0)[:, None]  # feature k belongs to the k-th masked row
    orig_pos = torch.tensor([[0, 2, 4], [2, 2, 3]])
    valid = torch.tensor([[1, 1, 1], [0, 1, 1]], dtype=torch.bool)
    layout = StageLayout(
        orig_pos=orig_pos,
        valid=valid,
        visual=torch.zeros_like(valid),
        prev_index=orig_pos,
        has_dummies=True,
    )
    rows, index = stage_token_rows(PendingTokenInputs(mask, [features]), layout)
    assert rows.tolist() == [[False, True, True], [False, True, True]]
    assert index.tolist() == [1, 2, 3, 4]  # rows (0,2), (0,4), (1,2), (1,3)


def test_more_feature_layers_than_declared_are_refused() -> None:
    tiny = _tiny("qwen3_vl")

    class TwoLayers(halfv.adapters.Qwen3VLAdapter):
        name = "qwen3-vl-two"

        def token_inputs(self, model: torch.nn.Module) -> Any:
            spec = super().token_inputs(model)
            return type(spec)(spec.module, spec.mask_arg, spec.features_arg, max_layers=2)

    with (
        halfv.apply(tiny.model, EARLY, adapter=TwoLayers()),
        torch.no_grad(),
        pytest.raises(UnsupportedModelError, match="max_layers is 2"),
    ):
        tiny.model(**tiny.prompt(MIXED))


@pytest.mark.parametrize(
    "adapter_class",
    [
        halfv.adapters.Qwen2VLAdapter,
        halfv.adapters.Qwen3VLAdapter,
        halfv.adapters.Qwen3VLMoeAdapter,
    ],
)
def test_adapter_contract(adapter_class: type[halfv.BackboneAdapter]) -> None:
    from halfv.testing import check_adapter

    check_adapter(adapter_class())
