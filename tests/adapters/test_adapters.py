"""halfv on the four built-in VLM families (tiny random-init models), SDPA and eager."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import halfv
from halfv.ops.budget import kept_count
from halfv.policies import UniformPolicy
from tiny import BUILDERS, StrideSSR, Tiny

FAMILIES = sorted(BUILDERS)
ATTENTION = ("sdpa", "eager")
PRUNE = halfv.PruningConfig(ivr_layer=2, ivr_keep=0.25, ssr_layer=4, ssr_mode="prune", ssr_keep=0.1)
FREEZE = halfv.PruningConfig(ivr_layer=2, ivr_keep=0.5, ssr_layer=4, ssr_mode="freeze")
KEEP_ALL = halfv.PruningConfig(
    ivr_layer=2, ivr_keep=1.0, ssr_layer=4, ssr_mode="prune", ssr_keep=1.0
)

_CACHE: dict[tuple[str, str], Tiny] = {}


@pytest.fixture(
    params=[(f, a) for f in FAMILIES for a in ATTENTION], ids=lambda p: f"{p[0]}-{p[1]}"
)
def tiny(request: pytest.FixtureRequest) -> Tiny:
    family, attention = request.param
    key = (family, attention)
    if key not in _CACHE:
        built = BUILDERS[family]()
        built.model.set_attn_implementation(attention)
        _CACHE[key] = built
    return _CACHE[key]


def _logits(model: torch.nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits[:, -1]


def _greedy(model: torch.nn.Module, inputs: dict[str, Any], n: int = 4) -> torch.Tensor:
    with torch.no_grad():
        return model.generate(**inputs, max_new_tokens=n, do_sample=False)


def test_keep_all_is_exact_and_exit_restores(tiny: Tiny) -> None:
    model = tiny.model
    inputs = tiny.prompt([[5, "img", 7]])
    ref_logits, ref_tokens = _logits(model, inputs), _greedy(model, inputs)
    with halfv.apply(model, KEEP_ALL) as handle:
        assert torch.equal(_logits(model, inputs), ref_logits)
        assert torch.equal(_greedy(model, inputs), ref_tokens)
        assert handle.stats is not None
        assert handle.stats.kept_visual_per_layer() == [tiny.visual_per_image] * 6
    with halfv.apply(model, PRUNE):
        assert not torch.equal(_logits(model, inputs), ref_logits)
    layers = halfv.get_adapter_for(model).decoder_layers(model)
    assert all(not layer._forward_pre_hooks for layer in layers)
    assert all("forward" not in vars(layer) for layer in layers)
    assert torch.equal(_logits(model, inputs), ref_logits)


def test_disabled_handle_is_exact(tiny: Tiny) -> None:
    inputs = tiny.prompt([[3, "img", 4]])
    ref = _logits(tiny.model, inputs)
    with halfv.apply(tiny.model, FREEZE) as handle, handle.disabled():
        assert torch.equal(_logits(tiny.model, inputs), ref)


@pytest.mark.parametrize("config", [PRUNE, FREEZE], ids=["prune", "freeze"])
def test_budget_order_and_text(tiny: Tiny, config: halfv.PruningConfig) -> None:
    inputs = tiny.prompt([[5, "img", 3, "img", 7]])
    ids = inputs["input_ids"][0]
    with halfv.apply(tiny.model, config) as handle:
        _logits(tiny.model, inputs)
        stats = handle.stats
    assert stats is not None
    visual = set(
        torch.isin(
            ids, torch.tensor(halfv.get_adapter_for(tiny.model).visual_token_ids(tiny.model))
        )
        .nonzero()
        .flatten()
        .tolist()
    )
    text = set(range(len(ids))) - visual
    spans = stats.spans[0]
    assert len(spans) == 2
    for layer, ratio in ((config.ivr_layer, config.ivr_keep), (config.ssr_layer, config.ssr_keep)):
        if layer not in stats.kept_positions:
            continue
        kept = stats.kept_positions[layer][0]
        assert list(kept) == sorted(set(kept))
        assert text <= set(kept)
        for start, n in spans:
            assert sum(start <= p < start + n for p in kept) == kept_count(n, ratio)
    frozen = [s for s in stats.layers if s.frozen]
    assert bool(frozen) == (config.ssr_mode == "freeze")
    for s in frozen:
        assert s.query_rows[0] == len(text)


def _extend(inputs: dict[str, Any], tokens: torch.Tensor) -> dict[str, Any]:
    out = dict(inputs)
    extra = tokens.shape[1]
    out["input_ids"] = torch.cat([inputs["input_ids"], tokens], dim=1)
    out["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones_like(tokens)], dim=1)
    if "mm_token_type_ids" in inputs:
        zeros = torch.zeros(tokens.shape[0], extra, dtype=inputs["mm_token_type_ids"].dtype)
        out["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"], zeros], dim=1)
    return out


@pytest.mark.parametrize("mode", ["prune", "freeze"])
def test_cached_decode_equals_recompute(tiny: Tiny, mode: str) -> None:
    model = tiny.model
    config = PRUNE if mode == "prune" else FREEZE
    adapter = halfv.get_adapter_for(model)
    ssr = StrideSSR() if mode == "prune" else halfv.get_ssr_policy("freeze")
    pipeline = halfv.Pipeline(config, adapter, UniformPolicy(), ssr, halfv.get_estimator("tme"))
    inputs = tiny.prompt([[4, "img", 6], [9, "img", 2]])
    prompt_len = inputs["input_ids"].shape[1]
    with pipeline.attach(model), torch.no_grad():
        out = model.generate(
            **inputs,
            max_new_tokens=4,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
        )
        for step in range(1, 4):
            grown = _extend(inputs, out.sequences[:, prompt_len : prompt_len + step])
            ref = model(**grown, use_cache=False).logits[:, -1]
            torch.testing.assert_close(out.logits[step], ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("config", [PRUNE, FREEZE], ids=["prune", "freeze"])
def test_batch_equals_single(tiny: Tiny, config: halfv.PruningConfig) -> None:
    samples = [[3, "img", 6], [2, "img", 1, "img", 4]]  # different lengths and image counts
    batch = tiny.prompt(samples, seed=1)
    with halfv.apply(tiny.model, config) as handle:
        batch_logits = _logits(tiny.model, batch)
        batch_stats = handle.stats
        assert batch_stats is not None
        for i in range(len(samples)):
            pad = int((batch["attention_mask"][i] == 0).sum())
            single = {k: batch[k][i : i + 1, pad:] for k in _SEQUENCE_KEYS if k in batch}
            single.update(_pixels_of(tiny, batch, samples, i))
            single_logits = _logits(tiny.model, single)
            torch.testing.assert_close(batch_logits[i : i + 1], single_logits, atol=1e-4, rtol=1e-4)
            single_stats = handle.stats
            assert single_stats is not None
            for layer, kept in single_stats.kept_positions.items():
                shifted = tuple(p + pad for p in kept[0])
                batch_kept = tuple(p for p in batch_stats.kept_positions[layer][i] if p >= pad)
                assert batch_kept == shifted


_SEQUENCE_KEYS = ("input_ids", "attention_mask", "mm_token_type_ids")


def _pixels_of(
    tiny: Tiny, batch: dict[str, Any], samples: list[list[Any]], i: int
) -> dict[str, Any]:
    """The visual tensors that belong to sample ``i`` of ``batch``."""
    counts = [sum(seg == "img" for seg in s) for s in samples]
    first, n = sum(counts[:i]), counts[i]
    out: dict[str, Any] = {}
    if tiny.family == "qwen2_5_vl":
        grids = batch["image_grid_thw"]
        rows = [int(g.prod()) for g in grids]
        out["pixel_values"] = batch["pixel_values"][sum(rows[:first]) : sum(rows[: first + n])]
        out["image_grid_thw"] = grids[first : first + n]
    else:
        out["pixel_values"] = batch["pixel_values"][first : first + n]
        if "image_sizes" in batch:
            out["image_sizes"] = batch["image_sizes"][first : first + n]
    return out


def test_text_only_passes_through(tiny: Tiny) -> None:
    inputs = tiny.prompt([[12]])
    ref_logits, ref_tokens = _logits(tiny.model, inputs), _greedy(tiny.model, inputs)
    with halfv.apply(tiny.model, PRUNE) as handle:
        assert torch.equal(_logits(tiny.model, inputs), ref_logits)
        assert torch.equal(_greedy(tiny.model, inputs), ref_tokens)
        assert handle.stats is None


def test_default_config_fits_depth(tiny: Tiny) -> None:
    adapter = halfv.get_adapter_for(tiny.model)
    config = adapter.default_config(tiny.model)
    config.check_depth(adapter.num_layers(tiny.model))
    with halfv.apply(tiny.model) as handle:
        _greedy(tiny.model, tiny.prompt([[2, "img", 3]]), n=2)
        assert handle.stats is not None


def test_layers_beyond_depth_rejected_before_forward() -> None:
    tiny = BUILDERS["llava"](layers=4)
    with pytest.raises(ValueError, match=r"ssr_layer=9 is out of range .* 4 decoder layers"):
        halfv.apply(tiny.model, halfv.PruningConfig(ivr_layer=2, ssr_layer=9, ssr_mode="freeze"))
    assert not any(layer._forward_pre_hooks for layer in tiny.model.model.language_model.layers)


def test_unknown_model_type_lists_registered() -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(
        LlamaConfig(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            vocab_size=50,
        )
    )
    with pytest.raises(halfv.UnknownComponentError, match="llama") as info:
        halfv.apply(model)
    for name in ("llava", "qwen2_5_vl", "internvl"):
        assert name in str(info.value)


def test_unsupported_attention_named() -> None:
    tiny = BUILDERS["llava"](layers=4)
    tiny.model.model.language_model.config._attn_implementation = "flash_attention_2"
    with pytest.raises(halfv.UnsupportedModelError, match="flash_attention_2"):
        halfv.apply(tiny.model, PRUNE.model_copy(update={"ssr_layer": 3}))


def test_apply_twice_refused(tiny: Tiny) -> None:
    with halfv.apply(tiny.model, PRUNE), pytest.raises(halfv.HalfvError, match="already applied"):
        halfv.apply(tiny.model, PRUNE)
