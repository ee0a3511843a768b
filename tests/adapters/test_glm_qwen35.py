"""GLM-4.1V / 4.6V / 4.5V and Qwen3.5 / 3.5-MoE: partial and interleaved rotary, sandwich
blocks, gated queries and linear-attention layers, on tiny random-init models."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

import halfv
from halfv.adapters import Glm4vAdapter, Qwen35Adapter
from halfv.errors import ConfigError
from halfv.ops.relevance import apply_rotary
from halfv.testing import (
    check_backbone,
    check_cached_decode,
    check_keep_all_exact,
    check_pruned_prefill,
)
from halfv.testing.reference import masked_reference
from tiny import Tiny
from tiny_glm import build_glm4v, build_qwen35

BUILDERS: dict[str, Callable[[], Tiny]] = {
    "glm4v": build_glm4v,
    "glm46v": lambda: build_glm4v(kind="glm46v"),
    "glm4v_moe": lambda: build_glm4v(kind="glm4v_moe"),
    "qwen3_5": build_qwen35,
    "qwen3_5_moe": lambda: build_qwen35(moe=True),
}
_CACHE: dict[tuple[str, str], Tiny] = {}
PROMPT = [[5, "img", 7], [3, "img", 2, "img", 4]]
PRUNE = halfv.PruningConfig(ivr_layer=2, ivr_keep=0.5, ssr_layer=4, ssr_mode="prune", ssr_keep=0.25)


def _tiny(family: str, attention: str = "sdpa") -> Tiny:
    key = (family, attention)
    if key not in _CACHE:
        built = BUILDERS[family]()
        built.model.set_attn_implementation(attention)
        _CACHE[key] = built
    return _CACHE[key]


def _logits(model: torch.nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits[:, -1]


@pytest.mark.parametrize(
    ("family", "attention"),
    [
        ("glm4v", "sdpa"),
        ("glm4v", "eager"),
        ("qwen3_5", "sdpa"),
        ("qwen3_5", "eager"),
        ("glm4v_moe", "eager"),
    ],
)
def test_check_backbone(family: str, attention: str) -> None:
    """Keep 1.0 bit-exact; prune and freeze equal the masked reference (linear layers on the
    surviving rows); generate's cached decode equals recompute; under eager, SSR keeps
    the model's own top-attended tokens (scored with the model's own rotary)."""
    tiny = _tiny(family, attention)
    check_backbone(tiny.model, tiny.prompt(PROMPT))


def test_qwen35_moe_prefill() -> None:
    """Qwen3.5-MoE (sparse-expert MLPs, same attention and linear layers as the dense
    model): keep 1.0 is bit-exact, prune and freeze equal the masked reference."""
    tiny = _tiny("qwen3_5_moe")
    inputs = tiny.prompt(PROMPT)
    check_keep_all_exact(tiny.model, inputs)
    freeze = PRUNE.model_copy(update={"ssr_mode": "freeze", "ssr_keep": None})
    for config in (PRUNE, freeze):
        check_pruned_prefill(tiny.model, inputs, config)


def test_glm46v_is_glm4v() -> None:
    """GLM-4.6V runs GLM-4.1V's text model: the same adapter, pruned and frozen exactly."""
    tiny = _tiny("glm46v")
    assert isinstance(halfv.get_adapter_for(tiny.model), Glm4vAdapter)
    inputs = tiny.prompt(PROMPT)
    freeze = PRUNE.model_copy(update={"ssr_mode": "freeze", "ssr_keep": None})
    for config in (PRUNE, freeze):
        check_pruned_prefill(tiny.model, inputs, config)


def test_specs_name_rotary_blocks_and_kinds() -> None:
    glm = _tiny("glm4v").model
    specs = Glm4vAdapter().layer_specs(glm)
    assert all(s.block == "sandwich" and s.kind == "full" for s in specs)
    assert specs[0].rotary is not None
    assert specs[0].rotary.__module__ == "transformers.models.glm4v.modeling_glm4v"
    assert {s.block for s in Glm4vAdapter().layer_specs(_tiny("glm4v_moe").model)} == {"pre_norm"}
    qwen = _tiny("qwen3_5").model
    kinds = [s.kind for s in Qwen35Adapter().layer_specs(qwen)]
    assert kinds == ["linear", "full"] * 3
    parts = Qwen35Adapter().attention_parts(halfv.get_adapter_for(qwen).decoder_layers(qwen)[1])
    assert parts.query_gate


def test_apply_rotary_uses_the_layers_own_function() -> None:
    """Rows rotated one by one with GLM's interleaved partial rotary equal the model's own
    function on the whole ``[B, H, S, hd]`` tensor; the Llama default does not."""
    from transformers.models.glm4v import modeling_glm4v

    gen = torch.Generator().manual_seed(0)
    q = torch.randn(2, 4, 5, 16, generator=gen)
    cos, sin = torch.randn(2, 5, 8, generator=gen), torch.randn(2, 5, 8, generator=gen)
    expected, _ = modeling_glm4v.apply_rotary_pos_emb(q, q, cos, sin)
    rows = q.transpose(1, 2).reshape(10, 4, 16)
    flat_cos, flat_sin = cos.reshape(10, 8), sin.reshape(10, 8)
    got = apply_rotary(rows, flat_cos, flat_sin, modeling_glm4v.apply_rotary_pos_emb)
    torch.testing.assert_close(got, expected.transpose(1, 2).reshape(10, 4, 16))
    full_cos, full_sin = flat_cos.repeat(1, 2), flat_sin.repeat(1, 2)
    assert not torch.allclose(apply_rotary(rows, full_cos, full_sin), got)


@pytest.mark.parametrize("family", ["glm4v", "qwen3_5"])
def test_batch_equals_single(family: str) -> None:
    """A left-padded batch of samples with different lengths and image counts gives each
    sample the logits and kept positions it gets alone."""
    tiny = _tiny(family)
    batch = tiny.prompt(PROMPT)
    rows = [int(g.prod()) for g in batch["image_grid_thw"]]
    counts = [sum(seg == "img" for seg in sample) for sample in PROMPT]
    with halfv.apply(tiny.model, PRUNE) as handle:
        together = _logits(tiny.model, batch)
        batch_stats = handle.stats
        assert batch_stats is not None
        for i in range(len(PROMPT)):
            pad = int((batch["attention_mask"][i] == 0).sum())
            single = {k: batch[k][i : i + 1, pad:] for k in _SEQUENCE_KEYS}
            first, n = sum(counts[:i]), counts[i]
            single["pixel_values"] = batch["pixel_values"][
                sum(rows[:first]) : sum(rows[: first + n])
            ]
            single["image_grid_thw"] = batch["image_grid_thw"][first : first + n]
            alone = _logits(tiny.model, single)
            torch.testing.assert_close(together[i : i + 1], alone, atol=1e-4, rtol=1e-4)
            stats = handle.stats
            assert stats is not None
            for layer, kept in stats.kept_positions.items():
                in_batch = tuple(p for p in batch_stats.kept_positions[layer][i] if p >= pad)
                assert in_batch == tuple(p + pad for p in kept[0])


_SEQUENCE_KEYS = ("input_ids", "attention_mask", "mm_token_type_ids")


@pytest.mark.parametrize("family", ["glm4v", "qwen3_5"])
def test_hand_written_decode_loop_equals_recompute(family: str) -> None:
    """A decode loop that passes only the new token and the cache (no mask, no positions)
    takes each token's position from the cache length, which transformers reads from the
    first attention layer: it must hold the whole prompt, so each step equals a
    from-scratch masked recompute."""
    tiny = _tiny(family)
    model, inputs = tiny.model, tiny.prompt([[3, "img", 2, "img", 4]])
    adapter = halfv.get_adapter_for(model)
    linear = [i for i, s in enumerate(adapter.layer_specs(model)) if s.kind == "linear"]
    t = inputs["input_ids"].shape[1]
    with halfv.apply(model, PRUNE) as handle, torch.no_grad():
        out = model(**inputs, use_cache=True)
        stats = handle.stats
        cache, ids = out.cache, inputs["input_ids"]
        token = out.logits[:, -1].argmax(-1, keepdim=True)
        steps = []
        for _ in range(3):
            ids = torch.cat([ids, token], dim=1)
            step = model(input_ids=token, cache=cache)
            steps.append(step.logits[:, -1])
            cache, token = step.cache, step.logits[:, -1].argmax(-1, keepdim=True)
    assert stats is not None
    for n, logits in enumerate(steps, start=1):
        grown = dict(inputs, input_ids=ids[:, : t + n])
        grown["attention_mask"] = torch.ones_like(grown["input_ids"])
        grown["mm_token_type_ids"] = torch.cat(
            [inputs["mm_token_type_ids"], torch.zeros_like(ids[:, t : t + n])], dim=1
        )
        kept = {
            layer: [(*p, *range(t, t + n)) for p in per_sample]
            for layer, per_sample in stats.kept_positions.items()
        }
        ref = masked_reference(
            model,
            grown,
            kept,
            layers=adapter.decoder_layers(model),
            visual_ids=adapter.visual_token_ids(model),
            row_subset_layers=linear,
        )
        torch.testing.assert_close(logits, ref.logits[:, -1], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("family", ["glm4v", "qwen3_5"])
def test_default_schedule_end_to_end(family: str) -> None:
    """The adapter's default schedule prunes, and generate's decode equals recompute."""
    tiny = _tiny(family)
    inputs = tiny.prompt(PROMPT)
    config = halfv.get_adapter_for(tiny.model).default_config(tiny.model)
    # 6 layers: Qwen2.5-VL's 2 and 21 of 28 scale to 1 and 5 (rounded half up); Qwen3.5's
    # scoring layers must be full attention (layers 1 and 3 here), so 2 and 4
    expected = {"glm4v": (1, 5), "qwen3_5": (2, 4)}[family]
    assert (config.ivr_layer, config.ssr_layer, config.ssr_mode) == (*expected, "prune")
    stats = check_pruned_prefill(tiny.model, inputs, config)
    assert stats.kept_visual_per_layer()[-1] < stats.kept_visual_per_layer()[0]
    check_cached_decode(tiny.model, inputs, config, new_tokens=2)
    with halfv.apply(tiny.model) as handle, torch.no_grad():
        tiny.model.generate(**inputs, max_new_tokens=2, do_sample=False)
        stats = handle.stats
    assert stats is not None
    assert stats.ssr_mode == "prune"


def test_qwen35_released_layout_default_schedule() -> None:
    """With the released layout (full attention at layers 3 and 7 of 8) the only layer
    that may score is 3: the default IVR is 4, no SSR stage fits, and the pruned prefill
    and its cached decode equal the reference."""
    tiny = build_qwen35(layers=8, interval=4)
    inputs = tiny.prompt(PROMPT)
    config = Qwen35Adapter().default_config(tiny.model)
    assert (config.ivr_layer, config.ssr_layer, config.ssr_mode) == (4, None, "none")
    check_pruned_prefill(tiny.model, inputs, config)
    check_cached_decode(tiny.model, inputs, config, new_tokens=2)
    with pytest.raises(ConfigError, match="ivr_layer >= 4"):
        halfv.apply(tiny.model, config.model_copy(update={"ivr_layer": 3}))


def test_qwen35_default_schedule_on_real_depths() -> None:
    """Every 4th layer is full attention in released Qwen3.5 configs: both scoring layers
    land on one (IVR right after the first, SSR nearest 3/4 depth)."""
    from halfv.adapters.base import scale_schedule
    from halfv.adapters.qwen3_5 import snap_schedule
    from halfv.interfaces import LayerSpec

    for depth, expected in ((32, (4, 24)), (40, (4, 28)), (64, (4, 48))):
        specs = [LayerSpec(kind="full" if i % 4 == 3 else "linear") for i in range(depth)]
        scaled = scale_schedule(Qwen35Adapter.reference_schedule, 28, depth)
        snapped = snap_schedule(scaled, specs)
        assert (snapped.ivr_layer, snapped.ssr_layer) == expected
        assert specs[snapped.ivr_layer - 1].kind == specs[snapped.ssr_layer - 1].kind == "full"


@pytest.mark.parametrize(
    ("update", "names"),
    [
        ({"ivr_layer": 1, "ssr_layer": 4}, "ivr_layer >= 2"),
        ({"ivr_layer": 3, "ssr_layer": 4}, "ivr_layer values are 2 or 4"),
        ({"ivr_layer": 2, "ssr_layer": 5}, "ssr_layer values are 4"),
    ],
)
def test_scoring_on_a_linear_layer_is_refused(update: dict[str, int], names: str) -> None:
    model = _tiny("qwen3_5").model
    with pytest.raises(ConfigError, match=names):
        halfv.apply(model, PRUNE.model_copy(update=update))
    assert not any(layer._forward_pre_hooks for layer in model.model.language_model.layers)


def test_unscored_prune_after_a_linear_layer_is_allowed() -> None:
    """A policy that reads no scores may prune after a linear layer (past the first
    attention layer); the result equals the masked reference."""
    tiny = _tiny("qwen3_5")
    config = PRUNE.model_copy(update={"ivr_layer": 3, "ivr_policy": "uniform", "ssr_layer": 4})
    check_pruned_prefill(tiny.model, tiny.prompt(PROMPT), config)


def test_qwen35_static_cache_with_pruning() -> None:
    """A static cache (static attention layers, recurrent linear layers) holds a pruned
    prefill: the same tokens and logits as the dynamic cache; keep 1.0 is exact."""
    model = _tiny("qwen3_5").model
    inputs = _tiny("qwen3_5").prompt(PROMPT)
    kw: dict[str, Any] = {"max_new_tokens": 3, "do_sample": False}
    out: dict[str, Any] = {"output_logits": True, "return_dict_in_generate": True}
    with torch.no_grad():
        with halfv.apply(model, PRUNE):
            dynamic = model.generate(**inputs, **kw, **out)
            static = model.generate(**inputs, **kw, **out, cache_implementation="static")
        plain = model.generate(**inputs, **kw, cache_implementation="static")
        keep_all = PRUNE.model_copy(update={"ivr_keep": 1.0, "ssr_keep": 1.0})
        with halfv.apply(model, keep_all):
            exact = model.generate(**inputs, **kw, cache_implementation="static")
    assert torch.equal(static.sequences, dynamic.sequences)
    for a, b in zip(static.logits, dynamic.logits, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    assert torch.equal(exact, plain)
