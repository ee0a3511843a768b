"""The pipeline and runtime on a fake backbone, over many span layouts (hypothesis).

The fake adapter treats token id 7 of a tiny Llama language model as a visual
placeholder, so every invariant of the runtime (order, text kept, exact budgets, KV-cache
decoding, ragged batches, programmatic composition) is checked without a vision tower.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import LlamaConfig, LlamaForCausalLM

import halfv
from halfv._compat import cache_from_output, cache_kwarg
from halfv.adapters import LlamaStyleAdapter
from halfv.ops.budget import kept_count
from halfv.policies import UniformPolicy
from strategies import keep_ratios, visual_layouts
from tiny import StrideSSR

VISUAL = 7


class FakeAdapter(LlamaStyleAdapter):
    name: ClassVar[str] = "fake"
    model_types: ClassVar[tuple[str, ...]] = ("llama",)
    follows: ClassVar[str] = "transformers/models/llama/modeling_llama.py (test double)"
    reference_layers: ClassVar[int] = 4
    reference_schedule: ClassVar[halfv.PruningConfig] = halfv.PruningConfig(
        ivr_layer=1, ivr_keep=0.5, ssr_layer=2, ssr_mode="prune", ssr_keep=0.25
    )

    def visual_token_ids(self, model: torch.nn.Module) -> tuple[int, ...]:
        return (VISUAL,)


def _model(attention: str) -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=64,
        max_position_embeddings=512,
    )
    model = LlamaForCausalLM(cfg).eval()
    model.set_attn_implementation(attention)
    return model


MODELS = {a: _model(a) for a in ("sdpa", "eager")}
ADAPTER = FakeAdapter()


def _ids(length: int, spans: list[tuple[int, int]], seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(10, 64, (length,), generator=gen)
    for start, n in spans:
        ids[start : start + n] = VISUAL
    return ids


def _batch(rows: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = r
        mask[i, width - len(r) :] = 1
    return {"input_ids": ids, "attention_mask": mask}


def _config(ivr_keep: float, ssr_keep: float, mode: str) -> halfv.PruningConfig:
    ssr_keep = min(ssr_keep, ivr_keep)
    return halfv.PruningConfig(
        ivr_layer=1, ivr_keep=ivr_keep, ssr_layer=3, ssr_mode=mode, ssr_keep=ssr_keep
    )


@settings(max_examples=25, deadline=None)
@given(
    layout=visual_layouts(max_spans=3, max_span_len=24),
    ivr_keep=keep_ratios(),
    ssr_keep=keep_ratios(),
    mode=st.sampled_from(["prune", "freeze", "none"]),
    policy=st.sampled_from(["halfv", "attention", "diversity", "random", "uniform"]),
    attention=st.sampled_from(["sdpa", "eager"]),
)
def test_kept_set_invariants(  # noqa: PLR0917 (hypothesis passes strategies by name)
    layout: tuple[int, list[tuple[int, int]]],
    ivr_keep: float,
    ssr_keep: float,
    mode: str,
    policy: str,
    attention: str,
) -> None:
    length, spans = layout
    model = MODELS[attention]
    config = _config(ivr_keep, ssr_keep, mode).model_copy(update={"ivr_policy": policy})
    inputs = _batch([_ids(length, spans, seed=length)])
    with halfv.apply(model, config, adapter=ADAPTER) as handle, torch.no_grad():
        logits = model(**inputs).logits
        stats = handle.stats
    assert torch.isfinite(logits).all()
    if not spans:
        assert stats is None
        return
    assert stats is not None
    visual = {p for s, n in spans for p in range(s, s + n)}
    stages = [(1, config.ivr_keep)] + ([(3, config.ssr_keep)] if mode == "prune" else [])
    assert sorted(stats.kept_positions) == [s for s, _ in stages]
    for layer, ratio in stages:
        kept = stats.kept_positions[layer][0]
        assert list(kept) == sorted(set(kept)), "order preserved, no duplicates"
        assert set(range(length)) - visual <= set(kept), "every text token kept"
        for start, n in spans:
            assert sum(start <= p < start + n for p in kept) == kept_count(n, ratio)
    assert logits.shape[1] == len(stats.kept_positions[max(stats.kept_positions)][0])


@settings(max_examples=12, deadline=None)
@given(
    layouts=st.lists(
        visual_layouts(min_spans=1, max_spans=2, max_span_len=16), min_size=2, max_size=3
    ),
    ivr_keep=keep_ratios(),
    mode=st.sampled_from(["prune", "freeze"]),
    attention=st.sampled_from(["sdpa", "eager"]),
)
def test_ragged_batch_equals_single(
    layouts: list[tuple[int, list[tuple[int, int]]]], ivr_keep: float, mode: str, attention: str
) -> None:
    model = MODELS[attention]
    config = _config(ivr_keep, 0.2, mode)
    pipeline = halfv.Pipeline(
        config,
        ADAPTER,
        UniformPolicy(),
        StrideSSR() if mode == "prune" else halfv.get_ssr_policy("freeze"),
        halfv.get_estimator("tme"),
    )
    rows = [_ids(t, s, seed=i) for i, (t, s) in enumerate(layouts)]
    batch = _batch(rows)
    with pipeline.attach(model) as handle, torch.no_grad():
        batch_logits = model(**batch).logits[:, -1]
        batch_kept = handle.stats.kept_positions if handle.stats else {}
        for i, row in enumerate(rows):
            single = model(**_batch([row])).logits[:, -1]
            torch.testing.assert_close(batch_logits[i : i + 1], single, atol=2e-5, rtol=1e-4)
            pad = batch["input_ids"].shape[1] - len(row)
            assert handle.stats is not None
            for layer, kept in handle.stats.kept_positions.items():
                assert tuple(p - pad for p in batch_kept[layer][i] if p >= pad) == kept[0]


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("mode", ["prune", "freeze"])
def test_manual_decode_loop_matches_recompute(attention: str, mode: str) -> None:
    """A hand-written decode loop (no position ids passed) stays right after pruning."""
    model = MODELS[attention]
    config = _config(0.3, 0.1, mode)
    ssr = StrideSSR() if mode == "prune" else halfv.get_ssr_policy("freeze")
    pipeline = halfv.Pipeline(config, ADAPTER, UniformPolicy(), ssr, halfv.get_estimator("tme"))
    ids = _ids(40, [(3, 20), (26, 9)], seed=3)[None]
    with pipeline.attach(model), torch.no_grad():
        out = model(input_ids=ids, use_cache=True)
        cache, seq = cache_from_output(out), ids
        for _ in range(3):
            token = out.logits[:, -1:].argmax(-1)
            seq = torch.cat([seq, token], dim=1)
            out = model(input_ids=token, use_cache=True, **{cache_kwarg(): cache})
            ref = model(input_ids=seq, use_cache=False).logits[:, -1]
            torch.testing.assert_close(out.logits[:, -1], ref, atol=1e-5, rtol=1e-5)


def test_programmatic_composition_and_stats() -> None:
    model = MODELS["sdpa"]
    pipeline = halfv.Pipeline(
        halfv.PruningConfig(ivr_layer=1, ivr_keep=0.5, ssr_layer=2, ssr_mode="freeze"),
        ADAPTER,
        halfv.get_ivr_policy("halfv", attention_share=0.5),
        halfv.get_ssr_policy("freeze"),
        halfv.get_estimator("tme", k=4),
    )
    ids = _ids(30, [(2, 20)], seed=0)[None]
    with pipeline.attach(model) as handle, torch.no_grad():
        model(input_ids=ids)
        stats = handle.stats
        assert stats is not None
        assert [layer.visual[0] for layer in stats.layers] == [20, 10, 10, 10]
        assert [layer.query_rows[0] for layer in stats.layers] == [30, 20, 10, 10]
        report = handle.flops()
        assert report.pruned_exact < report.full_exact
    assert not handle.active
    # the README reads the stats after the `with` block: they outlive the hooks
    assert handle.stats == stats
    assert handle.flops() == report
    with pytest.raises(halfv.HalfvError, match="removed"):
        handle.decode_without_cudnn = False


def test_auto_mode_runs_the_detector() -> None:
    model = MODELS["sdpa"]
    ids = _ids(24, [(2, 16)], seed=1)[None]
    config = halfv.PruningConfig(ivr_layer=1, ivr_keep=0.5, ssr_layer=2, ssr_mode="auto")
    with pytest.raises(ValueError, match="calibration_inputs"):
        halfv.apply(model, config, adapter=ADAPTER)
    with halfv.apply(
        model, config, adapter=ADAPTER, calibration_inputs=[{"input_ids": ids}]
    ) as handle:
        assert handle.saturation is not None
        assert handle.ssr_mode == handle.saturation.mode
        assert len(handle.saturation.kl_per_layer) == 4


def test_config_file_and_dict_accepted(tmp_path: Any) -> None:
    model = MODELS["sdpa"]
    path = halfv.save_config(halfv.PruningConfig(ivr_layer=1, ivr_keep=0.5), tmp_path / "c.json")
    with halfv.apply(model, path, adapter=ADAPTER) as handle:
        assert handle.config.ivr_keep == 0.5
    with halfv.apply(model, {"ivr_layer": 2, "ivr_keep": 0.75}, adapter=ADAPTER) as handle:
        assert handle.config.ivr_layer == 2
    with pytest.raises(ValueError, match="ivr_keep"):
        halfv.apply(model, {"ivr_keep": 1.5}, adapter=ADAPTER)
