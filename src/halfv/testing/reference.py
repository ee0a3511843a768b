"""An independent reference for a pruned prefill, built from the model's own layers.

halfv prunes by *removing* rows: from a pruning layer on, the dropped tokens are gone
from the sequence, and the rotary tables, positions and masks are gathered at the
survivors' original positions. A model that never loses a row but cannot *see* the dropped
tokens computes the same thing for every surviving row. That is what this module runs:
the untouched model, on the whole prompt, with hooks that only

* from each pruning layer on, remove the dropped tokens' key columns from the attention
  mask every decoder layer receives (each layer's own mask: causal, padding and sliding
  window stay as transformers built them), and
* for a frozen stage, put the visual rows back to their input values after each frozen
  layer (their hidden states stop changing; text rows still read their keys and values).

None of halfv's runtime is involved (no gathers, no stage layouts, no frozen-layer
forward), so a test that compares halfv's logits with :func:`masked_reference` checks the
runtime's wiring against the model's own arithmetic. It also records the query row's
attention probabilities at chosen layers (eager attention only: the model's own softmax),
which :func:`attention_topk` turns into the top-k selection halfv's relevance scoring
should reproduce.

Layers that are not softmax attention (a linear/recurrent layer) cannot be masked;
name them in ``row_subset_layers``: from a pruning layer on, such a layer runs on the
surviving rows only (the model's own module, one sample at a time) and dropped rows keep
their input.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from halfv.errors import HalfvValueError

__all__ = ["ReferenceOutput", "attention_topk", "masked_reference"]

#: per pruning layer, the original positions each sample keeps from that layer on
KeptPositions = Mapping[int, Sequence[Sequence[int]]]


@dataclass
class ReferenceOutput:
    """What :func:`masked_reference` returns.

    Attributes:
        logits: ``[B, T, V]`` logits of every prompt position (rows of dropped tokens are
            meaningless; compare surviving rows, usually the last).
        query_attention: for each requested layer, ``[B, H, T]`` the last row's attention
            probabilities over all key positions (dropped keys have probability 0).
    """

    logits: Tensor
    query_attention: dict[int, Tensor] = field(default_factory=dict)


def _alive_masks(
    kept: KeptPositions, batch: int, length: int, device: torch.device
) -> dict[int, Tensor]:
    masks: dict[int, Tensor] = {}
    for layer, per_sample in kept.items():
        if len(per_sample) != batch:
            msg = (
                f"kept positions of layer {layer} name {len(per_sample)} samples, "
                f"the batch has {batch}"
            )
            raise HalfvValueError(msg)
        alive = torch.zeros(batch, length, dtype=torch.bool, device=device)
        for b, positions in enumerate(per_sample):
            alive[b, list(positions)] = True
        masks[layer] = alive
    return masks


def _stage_of(layer: int, starts: Sequence[int]) -> int | None:
    return max((s for s in starts if s <= layer), default=None)


def _allowed(mask: Tensor | None, alive: Tensor, length: int) -> Tensor:
    """Bool ``[B, 1, T, T]``: the layer's own mask without the dropped keys.

    Each row keeps its own diagonal so a dropped row (read by nobody) has a finite softmax.
    """
    device = alive.device
    if mask is None:  # SDPA's causal fast path: no padding, no window that binds
        base = torch.ones(length, length, dtype=torch.bool, device=device).tril()[None, None]
    elif mask.dtype == torch.bool:
        base = mask[..., :length, :length]
    else:
        base = mask[..., :length, :length] == 0
    eye = torch.eye(length, dtype=torch.bool, device=device)[None, None]
    return (base & alive[:, None, None, :]) | eye


def _like(allowed: Tensor, mask: Tensor | None) -> Tensor:
    if mask is None or mask.dtype == torch.bool:
        return allowed
    zero = torch.zeros((), dtype=mask.dtype, device=allowed.device)
    return torch.where(allowed, zero, torch.finfo(mask.dtype).min)


def _hidden(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Tensor:
    return args[0] if args else kwargs["hidden_states"]  # type: ignore[no-any-return]


def masked_reference(
    model: nn.Module,
    inputs: Mapping[str, Any],
    kept: KeptPositions,
    *,
    layers: Sequence[nn.Module],
    visual_ids: Sequence[int],
    frozen_from: int | None = None,
    attention_layers: Sequence[int] = (),
    row_subset_layers: Sequence[int] = (),
) -> ReferenceOutput:
    """Run ``model`` on ``inputs`` with the dropped tokens masked out, no rows removed.

    Args:
        model: the model, *without* halfv applied (or with its handle disabled).
        inputs: the processor outputs (``input_ids`` required; left padding allowed).
        kept: ``{layer: per-sample positions}``, e.g. ``handle.stats.kept_positions``.
        layers: the decoder layers, in order (``adapter.decoder_layers(model)``).
        visual_ids: the visual token ids (``adapter.visual_token_ids(model)``).
        frozen_from: the first frozen layer of an SSR ``freeze`` stage, if any.
        attention_layers: layers whose query-row attention probabilities to record
            (the model must run eager attention).
        row_subset_layers: non-attention layers, run on the surviving rows only.
    """
    input_ids: Tensor = inputs["input_ids"]
    batch, length = input_ids.shape
    alive = _alive_masks(kept, batch, length, input_ids.device)
    starts = sorted(alive)
    visual = torch.isin(input_ids, torch.tensor(list(visual_ids), device=input_ids.device))
    recorded: dict[int, Tensor] = {}
    handles: list[Any] = []
    for idx, layer in enumerate(layers):
        stage = _stage_of(idx, starts)
        if stage is not None and idx in row_subset_layers:
            handles.append(_wrap_row_subset(layer, alive[stage]))
        elif stage is not None:
            handles.append(
                layer.register_forward_pre_hook(_MaskKeys(alive[stage], length), with_kwargs=True)
            )
        if frozen_from is not None and idx >= frozen_from:
            handles.append(layer.register_forward_hook(_Restore(visual), with_kwargs=True))
        if idx in attention_layers:
            attn = getattr(layer, "self_attn", None)
            if attn is None:
                msg = f"layer {idx} has no self_attn to record attention from"
                raise HalfvValueError(msg)
            handles.append(attn.register_forward_hook(_Record(idx, recorded)))
    try:
        with torch.no_grad():
            out = model(**inputs, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return ReferenceOutput(logits=out.logits, query_attention=recorded)


class _MaskKeys:
    def __init__(self, alive: Tensor, length: int) -> None:
        self.alive, self.length = alive, length

    def __call__(
        self, _module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        mask = kwargs.get("attention_mask")
        allowed = _allowed(mask, self.alive.to(_hidden(args, kwargs).device), self.length)
        kwargs["attention_mask"] = _like(allowed, mask)
        return args, kwargs


class _Restore:
    def __init__(self, visual: Tensor) -> None:
        self.visual = visual

    def __call__(
        self, _module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any
    ) -> Any:
        before = _hidden(args, kwargs)
        after = output[0] if isinstance(output, tuple) else output
        restored = torch.where(
            self.visual.to(after.device)[..., None], before.to(after.device), after
        )
        return (restored, *output[1:]) if isinstance(output, tuple) else restored


class _Record:
    def __init__(self, idx: int, into: dict[int, Tensor]) -> None:
        self.idx, self.into = idx, into

    def __call__(self, _module: nn.Module, _args: Any, output: Any) -> None:
        weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
        if weights is None:
            msg = (
                f"layer {self.idx} returned no attention weights: record attention with "
                "eager attention (model.set_attn_implementation('eager'))"
            )
            raise HalfvValueError(msg)
        self.into[self.idx] = weights[:, :, -1].detach().float()


def _wrap_row_subset(layer: nn.Module, alive: Tensor) -> Any:
    original = layer.forward

    def forward(*args: Any, **kwargs: Any) -> Any:
        hidden = _hidden(args, kwargs)
        rest = args[1:]
        out = hidden.clone()
        for b in range(hidden.shape[0]):
            rows = alive[b].nonzero().flatten().to(hidden.device)
            sub = {
                k: _rows_of(v, b, rows, hidden.shape[1])
                for k, v in kwargs.items()
                if k != "hidden_states"
            }
            result = original(hidden[b : b + 1, rows], *rest, **sub)
            result = result[0] if isinstance(result, tuple) else result
            out[b, rows] = result[0]
        return out

    layer.forward = forward

    class _Undo:
        def remove(self) -> None:
            layer.__dict__.pop("forward", None)

    return _Undo()


def _rows_of(value: Any, b: int, rows: Tensor, length: int) -> Any:
    """One sample's surviving rows of a per-token layer input (others pass unchanged)."""
    if isinstance(value, tuple):
        return tuple(_rows_of(v, b, rows, length) for v in value)
    if not isinstance(value, Tensor) or value.dim() < 2:
        return value
    if value.shape[1] != length:
        return value
    sample = value[b : b + 1] if value.shape[0] > 1 else value
    return sample[:, rows.to(value.device)]


def attention_topk(
    attention: Tensor,
    candidates: Tensor,
    spans: Sequence[Sequence[tuple[int, int]]],
    keep: float,
    sizes: Sequence[Sequence[int]] = (),
) -> list[list[int]]:
    """The top-attended candidates of each visual span, by the model's own attention.

    Args:
        attention: ``[B, H, T]`` query-row probabilities (:attr:`ReferenceOutput.query_attention`).
        candidates: bool ``[B, T]``, the visual positions still present at that layer.
        spans: per sample, ``(start, length)`` of each visual span in the prompt.
        keep: the stage's keep ratio of each span's *original* length.
        sizes: per sample, the visual tokens of each span when span joiners sit inside
            spans (``PruneStats.span_sizes``);
            empty: each span's length.

    Returns:
        Per sample, the kept visual positions, increasing. halfv's relevance is the mean
        over heads of each span's softmax over its keys; the model's softmax over all keys,
        renormalised per span, is that same distribution, so the order is the same.
    """
    from halfv.ops.budget import kept_count

    kept: list[list[int]] = []
    for b, sample_spans in enumerate(spans):
        chosen: list[int] = []
        for g, (start, n) in enumerate(sample_spans):
            size = sizes[b][g] if sizes else n
            cols = [p for p in range(start, start + n) if bool(candidates[b, p])]
            probs = attention[b][:, cols]
            probs = probs / probs.sum(dim=-1, keepdim=True)
            score = probs.mean(dim=0)
            budget = min(kept_count(size, keep), len(cols))
            order = sorted(range(len(cols)), key=lambda i: (-float(score[i]), i))[:budget]
            chosen.extend(cols[i] for i in order)
        kept.append(sorted(chosen))
    return kept
