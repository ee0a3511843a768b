"""Last-token relevance: the GQA maths on both code paths, and the runtime's scores
against a naive computation from the model's own modules."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
import torch

import halfv
import halfv.runtime.core
from halfv.interfaces import IVRPolicy
from halfv.ops.relevance import _logits
from tiny import BUILDERS


def _reference(q: torch.Tensor, k: torch.Tensor, sample_of_row: torch.Tensor) -> torch.Tensor:
    """Keys repeated per query head, float64 products and sums."""
    r = q.shape[1] // k.shape[1]
    keys = k.double().repeat_interleave(r, dim=1)  # head h reads KV head h // r
    return (q.double()[sample_of_row] * keys).sum(dim=-1)


@pytest.mark.parametrize(("batch", "heads", "kv_heads"), [(1, 4, 4), (2, 6, 2), (3, 8, 1)])
def test_logits_match_repeated_keys(batch: int, heads: int, kv_heads: int) -> None:
    gen = torch.Generator().manual_seed(batch * 10 + heads)
    q = torch.randn((batch, heads, 16), generator=gen).bfloat16()
    k = torch.randn((40, kv_heads, 16), generator=gen).bfloat16()
    sample_of_row = torch.randint(0, batch, (40,), generator=gen)
    got = _logits(q, k, sample_of_row)
    assert got.dtype == torch.float32
    assert got.shape == (40, heads)
    torch.testing.assert_close(got.double(), _reference(q, k, sample_of_row), rtol=1e-6, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("batch", [1, 3])
def test_cuda_half_logits_match_float64(batch: int) -> None:
    gen = torch.Generator().manual_seed(batch)
    q = torch.randn((batch, 28, 128), generator=gen).bfloat16()
    k = torch.randn((4096, 4, 128), generator=gen).bfloat16()
    rows = torch.randint(0, batch, (4096,), generator=gen)
    got = _logits(q.cuda(), k.cuda(), rows.cuda()).cpu()
    # exact products, float32 sums in either order: equal to float64 up to float32 rounding
    torch.testing.assert_close(got.double(), _reference(q, k, rows), rtol=1e-5, atol=1e-4)


# --------------------------------------------------------------------------- end to end
_SEEN: list[torch.Tensor] = []


class _RecordingTopK(IVRPolicy):
    """Top-k by relevance that records the scores the runtime hands it."""

    name: ClassVar[str] = "recording-topk"
    needs_features: ClassVar[bool] = False

    def _choose(
        self, scores: torch.Tensor, features: torch.Tensor | None, keep: int
    ) -> torch.Tensor:
        _SEEN.append(scores.detach().clone())
        return scores.topk(keep, dim=-1).indices


def _naive_relevance(
    model: torch.nn.Module, hidden: torch.Tensor, input_ids: torch.Tensor, layer: int
) -> torch.Tensor:
    """Method §4A from the layer's own modules, in float64: norm, q of the last token, k of
    the visual tokens, no RoPE, no scaling, softmax over each sample's visual keys, mean
    over heads (every KV head repeated for its query heads)."""
    adapter = halfv.get_adapter_for(model)
    parts = adapter.attention_parts(adapter.decoder_layers(model)[layer])
    visual = torch.isin(input_ids, torch.tensor(list(adapter.visual_token_ids(model))))
    rows = []
    for b in range(hidden.shape[0]):
        x = parts.input_layernorm(hidden[b])
        q = parts.q_proj(x[-1:]).view(1, -1, parts.head_dim)
        k = parts.k_proj(x[visual[b]]).view(int(visual[b].sum()), -1, parts.head_dim)
        if parts.q_norm is not None:
            q, k = parts.q_norm(q), parts.k_norm(k)
        k = k.repeat_interleave(parts.num_heads // parts.num_kv_heads, dim=1)
        logits = torch.einsum("hd,nhd->nh", q[0].double(), k.double())
        rows.append(logits.softmax(dim=0).mean(dim=1))
    return torch.stack(rows)


@pytest.mark.parametrize("tapped", [True, False], ids=["tapped", "recomputed"])
@pytest.mark.parametrize("family", sorted(BUILDERS))
@pytest.mark.parametrize("samples", [[[5, "img", 7]], [[4, "img", 6], [9, "img", 2]]])
def test_runtime_scores_equal_naive_last_token_attention(
    family: str, samples: list, tapped: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scores the IVR policy receives are the method's relevance, from the model:
    read from the scoring layer's own projections, or (when an attention module does not
    call them) recomputed from its input."""
    if not tapped:
        monkeypatch.setattr(halfv.runtime.core, "take_tapped", lambda call: None)
    tiny = BUILDERS[family](layers=4)
    model, inputs = tiny.model, tiny.prompt(samples)
    config = halfv.PruningConfig(ivr_layer=2, ivr_keep=0.5, ssr_mode="none")
    adapter = halfv.get_adapter_for(model)
    pipeline = halfv.Pipeline(
        config, adapter, _RecordingTopK(), halfv.get_ssr_policy("none"), halfv.get_estimator("tme")
    )
    captured: list[torch.Tensor] = []

    def grab(_m: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        captured.append((args[0] if args else kwargs["hidden_states"]).detach().clone())

    layer = adapter.decoder_layers(model)[config.ivr_layer - 1]
    hook = layer.register_forward_pre_hook(grab, with_kwargs=True)
    _SEEN.clear()
    try:
        with pipeline.attach(model), torch.no_grad():
            model(**inputs)
            expected = _naive_relevance(
                model, captured[0], inputs["input_ids"], config.ivr_layer - 1
            )
    finally:
        hook.remove()
    (scores,) = _SEEN
    torch.testing.assert_close(scores.double(), expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("family", sorted(BUILDERS))
def test_scoring_layers_project_each_row_once(family: str) -> None:
    """The relevance passes read the projections the scoring layers compute anyway: with
    halfv attached, each scoring layer's k_proj runs once per prefill, as unpruned."""
    tiny = BUILDERS[family](layers=6)
    model, inputs = tiny.model, tiny.prompt([[4, "img", 6], [9, "img", 2]])
    config = halfv.PruningConfig(
        ivr_layer=2, ivr_keep=0.5, ssr_layer=4, ssr_mode="prune", ssr_keep=0.25
    )
    adapter = halfv.get_adapter_for(model)
    scoring = [adapter.attention_parts(adapter.decoder_layers(model)[i]) for i in (1, 3)]
    calls = [0, 0]

    def counter(i: int) -> Any:
        def hook(*_: Any) -> None:
            calls[i] += 1

        return hook

    handles = [p.k_proj.register_forward_hook(counter(i)) for i, p in enumerate(scoring)]
    try:
        with halfv.apply(model, config) as handle, torch.no_grad():
            model(**inputs)
            stats = handle.stats
        assert stats is not None
        assert stats.layers[4].visual[0] < stats.visual_tokens[0]  # it pruned twice
    finally:
        for h in handles:
            h.remove()
    assert calls == [1, 1]
