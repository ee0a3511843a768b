"""Contract checks for a backbone adapter on a real (tiny) model of its family.

An adapter author builds a small random-init model of the family and a prompt with the
processor's visual placeholders, then calls :func:`check_backbone` from a test::

    from halfv.testing import check_backbone

    def test_my_adapter(tiny_model, prompt) -> None:
        check_backbone(tiny_model, prompt, adapter=MyAdapter())

Each check compares halfv with something that does not use halfv's runtime:

* :func:`check_keep_all_exact` -- at keep 1.0 the logits and greedy tokens are bit-equal
  to the plain model's;
* :func:`check_pruned_prefill` -- a pruned (or frozen) prefill equals
  :func:`halfv.testing.reference.masked_reference`, the model's own layers with the
  dropped tokens' keys masked (and, for freeze, visual rows restored after each frozen
  layer);
* :func:`check_relevance_follows_attention` -- under eager attention, the tokens SSR
  ``prune`` keeps are the top of the model's own attention of the query row;
* :func:`check_cached_decode` -- each token ``generate`` picks from a pruned prefill's
  cache has the logits a from-scratch pruned forward over the grown prompt gives.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from halfv.config import PruningConfig
from halfv.interfaces import BackboneAdapter
from halfv.runtime.plan import PruneStats
from halfv.testing.reference import attention_topk, masked_reference

__all__ = [
    "check_backbone",
    "check_cached_decode",
    "check_keep_all_exact",
    "check_pruned_prefill",
    "check_relevance_follows_attention",
]


def _apply(model: nn.Module, config: PruningConfig, adapter: BackboneAdapter | None) -> Any:
    """``halfv.apply`` with the per-call cost gate off: a contract check compares what the
    schedule computes, so no call may run unpruned for speed."""
    import halfv

    return halfv.apply(model, config.model_copy(update={"min_gain": None}), adapter=adapter)


def _adapter(model: nn.Module, adapter: BackboneAdapter | None) -> BackboneAdapter:
    import halfv

    return adapter or halfv.get_adapter_for(model)


def _last_logits(model: nn.Module, inputs: Mapping[str, Any]) -> Tensor:
    with torch.no_grad():
        return model(**inputs).logits[:, -1]  # type: ignore[no-any-return]


def _greedy(model: nn.Module, inputs: Mapping[str, Any], n: int) -> Tensor:
    with torch.no_grad():
        return model.generate(**inputs, max_new_tokens=n, do_sample=False)  # type: ignore[no-any-return,operator]


def _row_subset(adapter: BackboneAdapter, model: nn.Module, given: Sequence[int]) -> list[int]:
    """``given``, else the adapter's linear-attention layers (``LayerSpec.kind``), which
    the reference runs on the surviving rows (they have no attention mask to edit)."""
    if given:
        return list(given)
    return [i for i, spec in enumerate(adapter.layer_specs(model)) if spec.kind == "linear"]


def _schedule(adapter: BackboneAdapter, model: nn.Module) -> tuple[int, int]:
    """An IVR and an SSR layer inside the model: the second layer and two thirds down."""
    n = adapter.num_layers(model)
    ivr = min(2, n - 2) if n > 3 else 1
    return ivr, max(ivr + 1, (2 * n) // 3)


def check_keep_all_exact(
    model: nn.Module,
    inputs: Mapping[str, Any],
    *,
    adapter: BackboneAdapter | None = None,
    new_tokens: int = 3,
) -> None:
    """At keep 1.0, logits and greedy tokens are bit-equal to the model without halfv."""
    ada = _adapter(model, adapter)
    ivr, ssr = _schedule(ada, model)
    config = PruningConfig(
        ivr_layer=ivr, ivr_keep=1.0, ssr_layer=ssr, ssr_mode="prune", ssr_keep=1.0
    )
    ref_logits, ref_tokens = _last_logits(model, inputs), _greedy(model, inputs, new_tokens)
    with _apply(model, config, adapter):
        logits, tokens = _last_logits(model, inputs), _greedy(model, inputs, new_tokens)
    if not torch.equal(logits, ref_logits):
        diff = float((logits - ref_logits).abs().max())
        msg = f"keep 1.0 changed the logits (max |diff| {diff:.3g}); they must be bit-equal"
        raise AssertionError(msg)
    if not torch.equal(tokens, ref_tokens):
        msg = f"keep 1.0 changed the greedy tokens: {tokens.tolist()} != {ref_tokens.tolist()}"
        raise AssertionError(msg)


def check_pruned_prefill(
    model: nn.Module,
    inputs: Mapping[str, Any],
    config: PruningConfig,
    *,
    adapter: BackboneAdapter | None = None,
    atol: float = 1e-4,
    row_subset_layers: Sequence[int] = (),
) -> PruneStats:
    """A pruned prefill's last-position logits equal :func:`masked_reference`'s.

    Returns the prefill's :class:`~halfv.runtime.plan.PruneStats` (its kept positions are
    what the reference masked).
    """
    ada = _adapter(model, adapter)
    with _apply(model, config, adapter) as handle:
        logits = _last_logits(model, inputs)
        stats: PruneStats | None = handle.stats
    if stats is None:
        msg = "halfv did not prune this prompt (no visual tokens found?)"
        raise AssertionError(msg)
    frozen_from = config.ssr_layer if stats.ssr_mode == "freeze" else None
    ref = masked_reference(
        model,
        inputs,
        stats.kept_positions,
        layers=ada.decoder_layers(model),
        visual_ids=ada.visual_token_ids(model),
        frozen_from=frozen_from,
        row_subset_layers=_row_subset(ada, model, row_subset_layers),
    )
    expected = ref.logits[:, -1]
    if not torch.allclose(logits, expected, atol=atol, rtol=atol):
        diff = float((logits - expected).abs().max())
        msg = (
            f"pruned prefill ({stats.ssr_mode}, kept {stats.kept_visual_per_layer()}) differs "
            f"from the masked reference by {diff:.3g} (atol {atol})"
        )
        raise AssertionError(msg)
    return stats


def check_relevance_follows_attention(
    model: nn.Module,
    inputs: Mapping[str, Any],
    *,
    adapter: BackboneAdapter | None = None,
    ssr_keep: float = 0.25,
    row_subset_layers: Sequence[int] = (),
) -> None:
    """Under eager attention, SSR ``prune`` keeps the model's own top-attended tokens.

    The schedule: IVR keeps half of each image (uniformly, no scores), then SSR keeps the
    top ``ssr_keep`` by RoPE-aware, ``1/sqrt(head_dim)``-scaled relevance, which is the
    model's own softmax of the query row renormalised per image.
    """
    ada = _adapter(model, adapter)
    ivr, ssr = _schedule(ada, model)
    config = PruningConfig(
        ivr_layer=ivr,
        ivr_keep=0.5,
        ivr_policy="uniform",
        ssr_layer=ssr,
        ssr_mode="prune",
        ssr_policy="prune",
        ssr_keep=ssr_keep,
        relevance_scaling=True,
    )
    with _apply(model, config, adapter) as handle:
        _last_logits(model, inputs)
        stats = handle.stats
    assert stats is not None, "halfv did not prune this prompt"
    ref = masked_reference(
        model,
        inputs,
        {ivr: stats.kept_positions[ivr]},
        layers=ada.decoder_layers(model),
        visual_ids=ada.visual_token_ids(model),
        attention_layers=(ssr - 1,),
        row_subset_layers=_row_subset(ada, model, row_subset_layers),
    )
    ids: Tensor = inputs["input_ids"]
    visual = torch.isin(ids, torch.tensor(ada.visual_token_ids(model)))
    candidates = torch.zeros_like(visual)
    for b, positions in enumerate(stats.kept_positions[ivr]):
        candidates[b, list(positions)] = True
    expected = attention_topk(
        ref.query_attention[ssr - 1], candidates & visual, stats.spans, ssr_keep, stats.span_sizes
    )
    for b, positions in enumerate(stats.kept_positions[ssr]):
        got = [p for p in positions if bool(visual[b, p])]
        if got != expected[b]:
            msg = (
                f"sample {b}: SSR kept visual positions {got}, the model's own attention at "
                f"layer {ssr - 1} ranks {expected[b]} first"
            )
            raise AssertionError(msg)


def check_cached_decode(
    model: nn.Module,
    inputs: Mapping[str, Any],
    config: PruningConfig,
    *,
    adapter: BackboneAdapter | None = None,
    new_tokens: int = 3,
    atol: float = 1e-4,
    row_subset_layers: Sequence[int] = (),
) -> None:
    """Logits of each cached decode step equal a from-scratch recompute of the grown
    prompt: :func:`masked_reference` with the prefill's kept positions (the generated
    tokens are text, never dropped)."""
    ada = _adapter(model, adapter)
    prompt_len = int(inputs["input_ids"].shape[1])
    with _apply(model, config, adapter) as handle, torch.no_grad():
        out: Any = model.generate(  # type: ignore[operator]
            **inputs,
            max_new_tokens=new_tokens,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
        )
        stats = handle.stats
    assert stats is not None, "halfv did not prune this prompt"
    frozen_from = config.ssr_layer if stats.ssr_mode == "freeze" else None
    for step in range(1, new_tokens):
        grown = _extend(inputs, out.sequences[:, prompt_len : prompt_len + step], model)
        kept = {
            layer: [(*p, *range(prompt_len, prompt_len + step)) for p in per_sample]
            for layer, per_sample in stats.kept_positions.items()
        }
        ref = masked_reference(
            model,
            grown,
            kept,
            layers=ada.decoder_layers(model),
            visual_ids=ada.visual_token_ids(model),
            frozen_from=frozen_from,
            row_subset_layers=_row_subset(ada, model, row_subset_layers),
        ).logits[:, -1]
        if not torch.allclose(out.logits[step], ref, atol=atol, rtol=atol):
            diff = float((out.logits[step] - ref).abs().max())
            msg = f"decode step {step} differs from recompute by {diff:.3g} (atol {atol})"
            raise AssertionError(msg)


def _extend(
    inputs: Mapping[str, Any], tokens: Tensor, model: nn.Module | None = None
) -> dict[str, Any]:
    """``inputs`` with ``tokens`` appended (text: zero token types, ones in the mask).

    ``token_type_ids`` grow as ``generate`` grows them, by the model's own
    ``_update_model_kwargs_for_generation`` one token at a time when it has one:
    PaliGemma marks generated tokens 1 (the causal suffix; 0 would put them in the
    bidirectional prefix), the generic rule repeats the last prompt value.
    """
    out = dict(inputs)
    out["input_ids"] = torch.cat([inputs["input_ids"], tokens], dim=1)
    for key in ("attention_mask", "mm_token_type_ids", "token_type_ids"):
        if key in inputs and isinstance(inputs[key], Tensor):
            value = inputs[key]
            fill = torch.ones_like(tokens) if key == "attention_mask" else torch.zeros_like(tokens)
            out[key] = torch.cat([value, fill.to(value.dtype)], dim=1)
    update = getattr(model, "_update_model_kwargs_for_generation", None)
    if callable(update) and isinstance(inputs.get("token_type_ids"), Tensor):
        grown = {"token_type_ids": inputs["token_type_ids"]}
        for _ in range(tokens.shape[1]):
            grown = update({}, grown, num_new_tokens=1)
        out["token_type_ids"] = grown["token_type_ids"]
    return out


def check_backbone(
    model: nn.Module,
    inputs: Mapping[str, Any],
    *,
    adapter: BackboneAdapter | None = None,
    modes: Sequence[str] = ("prune", "freeze"),
    atol: float = 1e-4,
    row_subset_layers: Sequence[int] = (),
) -> None:
    """Every check of this module on one model and prompt (in its current attention
    implementation; relevance is checked only under eager attention)."""
    ada = _adapter(model, adapter)
    check_keep_all_exact(model, inputs, adapter=adapter)
    ivr, ssr = _schedule(ada, model)
    for mode in modes:
        config = PruningConfig(
            ivr_layer=ivr,
            ivr_keep=0.5,
            ssr_layer=ssr,
            ssr_mode=mode,  # type: ignore[arg-type]
            ssr_keep=0.25,
        )
        check_pruned_prefill(
            model, inputs, config, adapter=adapter, atol=atol, row_subset_layers=row_subset_layers
        )
        check_cached_decode(
            model, inputs, config, adapter=adapter, atol=atol, row_subset_layers=row_subset_layers
        )
    attn = getattr(getattr(model, "config", None), "_attn_implementation", None)
    if attn == "eager" and "prune" in modes:
        check_relevance_follows_attention(
            model, inputs, adapter=adapter, row_subset_layers=row_subset_layers
        )
