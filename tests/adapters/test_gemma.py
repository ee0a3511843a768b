"""Gemma 3 (sliding-window and full layers, sandwich blocks, bidirectional image attention).

Every prompt here is longer than the tiny model's sliding window (12), so the sliding
layers' masks and caches bind, in prefill and in decode.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

import halfv
from halfv.adapters import Gemma3Adapter
from halfv.errors import UnsupportedModelError
from halfv.interfaces import LayerSpec
from halfv.testing import check_backbone
from halfv.testing.backbone import (
    check_cached_decode,
    check_pruned_prefill,
    check_relevance_follows_attention,
)
from halfv.testing.reference import masked_reference
from tiny import Tiny
from tiny_gemma import WINDOW, build_gemma

ATTENTION = ("sdpa", "eager")
PRUNE = halfv.PruningConfig(ivr_layer=2, ivr_keep=0.5, ssr_layer=4, ssr_mode="prune", ssr_keep=0.25)
FREEZE = halfv.PruningConfig(ivr_layer=2, ivr_keep=0.5, ssr_layer=4, ssr_mode="freeze")
SINGLE = [[5, "img", 7]]  # 30 tokens
RAGGED = [[2, "img", 9], [3, "img", 2, "img", 4]]  # 27 and 45 tokens, left-padded

_CACHE: dict[tuple[str, str], Tiny] = {}


def _tiny(attention: str, kind: str = "mixed") -> Tiny:
    key = (kind, attention)
    if key not in _CACHE:
        if kind == "mixed":
            built = build_gemma()
        else:  # every scoring layer sliding, a wider window: see test_sliding_scoring
            built = build_gemma(
                window=16, layer_types=["sliding_attention"] * 5 + ["full_attention"]
            )
        built.model.set_attn_implementation(attention)
        _CACHE[key] = built
    return _CACHE[key]


@pytest.fixture(params=ATTENTION)
def tiny(request: pytest.FixtureRequest) -> Tiny:
    return _tiny(request.param)


def _logits(model: torch.nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits[:, -1]


def test_adapter_is_found_and_reads_the_layer_types(tiny: Tiny) -> None:
    adapter = halfv.get_adapter_for(tiny.model)
    assert isinstance(adapter, Gemma3Adapter)
    specs = adapter.layer_specs(tiny.model)
    assert [s.kind for s in specs] == ["sliding", "full"] * 3
    assert all(s.block == "sandwich" for s in specs)
    assert {s.window for s in specs if s.kind == "sliding"} == {WINDOW}
    parts = adapter.attention_parts(adapter.decoder_layers(tiny.model)[0])
    layer: Any = adapter.decoder_layers(tiny.model)[0]
    assert parts.post_attention_layernorm is layer.pre_feedforward_layernorm
    assert parts.attn_output_norm is layer.post_attention_layernorm
    assert parts.mlp_output_norm is layer.post_feedforward_layernorm
    assert parts.softcap is None  # Gemma3Attention never passes attn_logit_softcapping


def test_check_backbone(tiny: Tiny) -> None:
    """Keep 1.0 bit-exact, prune and freeze prefills equal the masked reference, cached
    decode through generate equals recompute, relevance follows eager attention."""
    check_backbone(tiny.model, tiny.prompt(SINGLE))


@pytest.mark.parametrize(
    ("attention", "config"),
    [("sdpa", PRUNE), ("eager", FREEZE)],
    ids=["sdpa-prune", "eager-freeze"],
)
def test_ragged_batch_prefill_and_decode(attention: str, config: halfv.PruningConfig) -> None:
    tiny = _tiny(attention)
    inputs = tiny.prompt(RAGGED, seed=3)
    assert inputs["input_ids"].shape[1] > 3 * WINDOW
    check_pruned_prefill(tiny.model, inputs, config)
    check_cached_decode(tiny.model, inputs, config, new_tokens=3)


@pytest.mark.parametrize("config", [PRUNE, FREEZE], ids=["prune", "freeze"])
def test_hand_written_decode_loop(tiny: Tiny, config: halfv.PruningConfig) -> None:
    """A loop that feeds one token at a time into the prefill's cache (no generate), with
    and without the growing 2-D mask, equals the masked recompute of the grown prompt."""
    model, adapter = tiny.model, halfv.get_adapter_for(tiny.model)
    inputs = tiny.prompt(SINGLE, seed=5)
    steps = WINDOW + 2  # past the window: the sliding caches evict and roll
    with halfv.apply(model, config) as handle, torch.no_grad():
        out = model(**inputs, use_cache=True)
        kept = handle.stats.kept_positions  # type: ignore[union-attr]
        cache, ids = out.cache, inputs["input_ids"]
        for step in range(steps):
            token = out.logits[:, -1:].argmax(-1)
            ids = torch.cat([ids, token], dim=1)
            step_inputs: dict[str, Any] = {"input_ids": token, "cache": cache}
            if step % 2:
                step_inputs["attention_mask"] = torch.ones_like(ids)
            out = model(**step_inputs, use_cache=True)
            cache = out.cache
            if step in (0, steps - 1):
                grown = {"input_ids": ids, "token_type_ids": _types(inputs, ids)}
                grown["pixel_values"] = inputs["pixel_values"]
                t = inputs["input_ids"].shape[1]
                extra = tuple(range(t, ids.shape[1]))
                with handle.disabled():
                    ref = masked_reference(
                        model,
                        grown,
                        {layer: [(*p, *extra) for p in per] for layer, per in kept.items()},
                        layers=adapter.decoder_layers(model),
                        visual_ids=adapter.visual_token_ids(model),
                        frozen_from=config.ssr_layer if config.ssr_mode == "freeze" else None,
                    ).logits[:, -1]
                torch.testing.assert_close(out.logits[:, -1], ref, atol=1e-4, rtol=1e-4)


def _types(inputs: dict[str, Any], ids: torch.Tensor) -> torch.Tensor:
    types = torch.zeros_like(ids)
    types[:, : inputs["token_type_ids"].shape[1]] = inputs["token_type_ids"]
    return types


@pytest.mark.parametrize("config", [PRUNE, FREEZE], ids=["prune", "freeze"])
def test_batch_equals_single(tiny: Tiny, config: halfv.PruningConfig) -> None:
    batch = tiny.prompt(RAGGED, seed=1)
    with halfv.apply(tiny.model, config) as handle:
        batch_logits = _logits(tiny.model, batch)
        batch_kept = handle.stats.kept_positions  # type: ignore[union-attr]
        for i in range(len(RAGGED)):
            pad = int((batch["attention_mask"][i] == 0).sum())
            single = {
                k: batch[k][i : i + 1, pad:]
                for k in ("input_ids", "attention_mask", "token_type_ids")
            }
            first = sum(s.count("img") for s in RAGGED[:i])
            single["pixel_values"] = batch["pixel_values"][first : first + RAGGED[i].count("img")]
            torch.testing.assert_close(
                batch_logits[i : i + 1], _logits(tiny.model, single), atol=1e-4, rtol=1e-4
            )
            single_kept = handle.stats.kept_positions  # type: ignore[union-attr]
            for layer, kept in single_kept.items():
                assert tuple(p for p in batch_kept[layer][i] if p >= pad) == tuple(
                    p + pad for p in kept[0]
                )


def test_bidirectional_image_attention_is_what_the_reference_checks() -> None:
    """token_type_ids change the model's prefill (images attend both ways), and a pruned
    prefill with them still equals the reference (which reads the model's own masks)."""
    tiny = _tiny("sdpa")
    inputs = tiny.prompt(SINGLE, seed=2)
    causal = {k: v for k, v in inputs.items() if k != "token_type_ids"}
    assert not torch.allclose(_logits(tiny.model, inputs), _logits(tiny.model, causal))
    check_pruned_prefill(tiny.model, inputs, PRUNE)
    check_pruned_prefill(tiny.model, causal, PRUNE)


def test_sliding_scoring_layers_follow_the_model_attention() -> None:
    """Scoring at sliding layers: image tokens outside the window get relevance 0, as in
    the model's own softmax, and SSR keeps the model's top-attended tokens."""
    tiny = _tiny("eager", kind="sliding")
    inputs = tiny.prompt([[3, "img", 2]], seed=4)
    t = inputs["input_ids"].shape[1]
    visual = (inputs["input_ids"][0] == 998).nonzero().flatten()
    assert int(visual.min()) <= t - 1 - 16  # some image tokens are outside the window
    check_relevance_follows_attention(tiny.model, inputs)
    check_pruned_prefill(tiny.model, inputs, PRUNE)
    check_cached_decode(tiny.model, inputs, FREEZE)


def test_keep_all_static_cache_is_exact_and_pruning_into_it_is_refused() -> None:
    tiny = _tiny("sdpa")
    model, inputs = tiny.model, tiny.prompt(SINGLE)
    keep_all = halfv.PruningConfig(
        ivr_layer=2, ivr_keep=1.0, ssr_layer=4, ssr_mode="prune", ssr_keep=1.0
    )
    kwargs = {"max_new_tokens": 4, "do_sample": False, "cache_implementation": "static"}
    with torch.no_grad():
        ref = model.generate(**inputs, **kwargs)
        with halfv.apply(model, keep_all):
            assert torch.equal(model.generate(**inputs, **kwargs), ref)
        with halfv.apply(model, PRUNE), pytest.raises(UnsupportedModelError, match="sliding"):
            model.generate(**inputs, **kwargs)


def test_default_schedule_end_to_end() -> None:
    tiny = _tiny("sdpa")
    adapter = halfv.get_adapter_for(tiny.model)
    config = adapter.default_config(tiny.model)
    # IVR right after the first full-attention layer (1); freeze after the one nearest 2/3
    assert (config.ivr_layer, config.ssr_layer, config.ssr_mode) == (2, 4, "freeze")
    inputs = tiny.prompt(RAGGED, seed=6)
    check_pruned_prefill(tiny.model, inputs, config)
    with halfv.apply(tiny.model) as handle, torch.no_grad():
        tokens = tiny.model.generate(**inputs, max_new_tokens=3, do_sample=False)
        stats = handle.stats
    assert tokens.shape[1] == inputs["input_ids"].shape[1] + 3
    assert stats is not None
    assert [s.frozen for s in stats.layers] == [False] * 4 + [True] * 2
    assert stats.kept_visual_per_layer(1) == [32, 32, 16, 16, 16, 16]


def test_default_schedule_of_gemma3_4b_layout() -> None:
    """On the 34-layer layout of Gemma 3 4B (full attention at 5, 11, 17, 23, 29)."""
    tiny = build_gemma(layers=34, layer_types=None)
    text = tiny.model.config.text_config
    text.layer_types = ["sliding_attention" if (i + 1) % 6 else "full_attention" for i in range(34)]
    config = Gemma3Adapter().default_config(tiny.model)
    assert (config.ivr_layer, config.ssr_layer) == (6, 24)
    assert config == Gemma3Adapter.reference_schedule


class _PreNormClaim(Gemma3Adapter):
    def layer_specs(self, model: torch.nn.Module) -> list[LayerSpec]:
        return [LayerSpec(kind=s.kind, window=s.window) for s in super().layer_specs(model)]


def test_freezing_a_sandwich_block_declared_pre_norm_is_refused() -> None:
    tiny = _tiny("sdpa")
    with pytest.raises(UnsupportedModelError, match="sandwich"):
        halfv.apply(tiny.model, FREEZE, adapter=_PreNormClaim())
    with halfv.apply(tiny.model, PRUNE, adapter=_PreNormClaim()):
        pass  # pruning never runs the frozen path
