"""One pruned prefill's stage steps: score, select and gather, and the labels that follow.

Model wiring around the tensor maths: the scoring layer's inputs are kept
(:class:`~halfv.runtime.scoring.PendingScore`) until its projections are tapped; a
pruning layer asks its policy for the survivors of every span, builds the next stage's
layout and gathers the survivors' hidden states; a training call's labels are gathered to
the rows the model kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from halfv.devices import module_device
from halfv.errors import HalfvValueError
from halfv.interfaces import AttentionParts, IVRPolicy, RotaryFn, SSRPolicy
from halfv.ops.spans import VisualSpans, find_visual_spans, spans_from_mask
from halfv.runtime.distributed import head_group
from halfv.runtime.layout import gather_rows, next_layout
from halfv.runtime.plan import PrefillPlan, select_per_span
from halfv.runtime.scoring import PendingScore
from halfv.runtime.state import CallState

__all__ = [
    "gather_labels_in_place",
    "mask_2d",
    "pending_score",
    "placeholder_mask",
    "prefill_spans",
    "prune",
    "query_positions",
    "take_tapped",
]

IGNORE_INDEX = -100  # transformers' label for rows without a loss


@torch.no_grad()
def pending_score(
    plan: PrefillPlan,
    idx: int,
    hidden: Tensor,
    kwargs: dict[str, Any],
    parts: AttentionParts,
    *,
    rope: bool,
    scale: bool,
    rotary_fn: RotaryFn | None = None,
    window: int | None = None,
) -> PendingScore:
    """What scoring layer ``idx`` needs once its projections are tapped (RoPE on for the
    SSR pass, with the layer's own rotary function ``rotary_fn`` when it has one;
    ``window``: the layer's sliding window, whose hidden keys score 0)."""
    layout = plan.current_layout(idx)
    rows, segment = plan.visual_rows(layout)
    visible = None
    if window is not None:
        s = layout.length
        orig = layout.orig_pos.reshape(-1)[rows]
        visible = plan.query_pos[rows // s] - orig < window
    rotary = None
    if rope:
        b, s = hidden.shape[:2]
        cos, sin = kwargs["position_embeddings"]
        rotary = (
            cos.expand(b, -1, -1).reshape(b * s, -1),
            sin.expand(b, -1, -1).reshape(b * s, -1),
        )
    return PendingScore(
        hidden=hidden.detach(),
        query_rows=plan.query_rows(layout),
        visual_rows=rows,
        segment=segment,
        num_segments=len(plan.budgets),
        parts=parts,
        rotary=rotary,
        scale=scale,
        head_group=head_group(parts, idx),  # tensor parallelism: sum heads across ranks
        rotary_fn=rotary_fn,
        visible=visible,
    )


@torch.no_grad()
def _select(
    plan: PrefillPlan,
    idx: int,
    hidden: Tensor,
    policy: IVRPolicy | SSRPolicy,
    *,
    stage: Literal["ivr", "ssr"],
    final_norm: nn.Module,
) -> Tensor:
    """Choose the survivors of pruning layer ``idx``; records the new stage's layout in
    ``plan`` and returns its ``prev_index`` (the gather of the hidden states)."""
    layout = plan.current_layout(idx - 1)
    rows = layout.visual_rows
    b, s, d = hidden.shape
    features = None
    if policy.needs_features:
        flat = hidden.detach().reshape(b * s, d)[rows.to(hidden.device)]
        features = final_norm(flat.to(module_device(final_norm, flat.device)))
    sizes = [g.length if stage == "ivr" else g.ivr_keep for g in plan.budgets]
    keeps = [g.ivr_keep if stage == "ivr" else g.ssr_keep for g in plan.budgets]
    chosen = select_per_span(policy, plan.scores, features, sizes, keeps, device=rows.device)
    t = plan.prompt_len
    orig_rows = (rows // s) * t + layout.orig_pos.reshape(-1)[rows]
    visual = plan.spans.mask
    selected = torch.zeros(b * t, dtype=torch.bool, device=visual.device)
    selected.index_fill_(0, orig_rows.to(visual.device)[chosen.to(visual.device)], True)
    alive = ~visual | selected.view(b, t)
    counts, kept = plan.alive_counts(stage)  # host-known: no device sync
    new_layout = next_layout(layout, alive, visual, counts=counts, visual_counts=kept)
    plan.layouts[idx] = new_layout
    plan.scores = None
    return new_layout.prev_index


def prune(
    plan: PrefillPlan,
    idx: int,
    hidden: Tensor,
    policy: IVRPolicy | SSRPolicy,
    *,
    stage: Literal["ivr", "ssr"],
    final_norm: nn.Module,
) -> Tensor:
    """Prune at layer ``idx``: select, then gather the hidden states of the survivors."""
    index = _select(plan, idx, hidden, policy, stage=stage, final_norm=final_norm)
    return gather_rows(hidden, index.to(hidden.device))


def query_positions(
    shape: tuple[int, ...],
    mask2d: Tensor | None,
    device: torch.device,
    logits_to_keep: int | None,
) -> Tensor:
    """``[B]`` query position of each sample: its last real token, or the first position
    whose logits the caller reads (``T - logits_to_keep``), whichever is earlier."""
    b, t = int(shape[0]), int(shape[1])
    if mask2d is None:
        last = torch.full((b,), t - 1, device=device, dtype=torch.long)
    else:
        positions = torch.arange(t, device=device).expand(b, t)
        last = torch.where(mask2d.to(device).bool(), positions, -1).amax(dim=1)
    if logits_to_keep is not None and logits_to_keep < t:
        last = last.clamp(max=t - logits_to_keep)
    return last


def prefill_spans(
    visual_ids: Sequence[int],
    logits_to_keep: int | None,
    input_ids: Any,
    supplied: Tensor | None,
    kwargs: dict[str, Any],
    *,
    joiner_ids: Sequence[int] = (),
) -> tuple[VisualSpans, Tensor | None, Tensor] | None:
    """The visual spans of a prefill (from ``input_ids``, else from a visual mask the
    caller supplied), its 2-D attention mask and query positions; ``None`` when the call
    has neither (``inputs_embeds`` alone), so its rows cannot be told apart. Runs joined
    by ``joiner_ids`` (the adapter's span joiners) are one span."""
    mask2d = mask_2d(kwargs)
    if isinstance(input_ids, Tensor) and input_ids.dim() == 2:
        query_pos = query_positions(input_ids.shape, mask2d, input_ids.device, logits_to_keep)
        spans = find_visual_spans(
            input_ids, visual_ids, keep_positions=query_pos, joiner_ids=joiner_ids
        )
        return spans, mask2d, query_pos
    if supplied is None:
        return None
    shape = tuple(supplied.shape)
    embeds = kwargs.get("inputs_embeds")
    if isinstance(embeds, Tensor) and tuple(embeds.shape[:2]) != shape:
        msg = (
            f"the visual mask given to handle.visual_positions has shape {shape}, "
            f"but inputs_embeds is {tuple(embeds.shape)}: pass a [batch, seq] mask"
        )
        raise HalfvValueError(msg)
    query_pos = query_positions(shape, mask2d, supplied.device, logits_to_keep)
    return spans_from_mask(supplied.bool(), keep_positions=query_pos), mask2d, query_pos


def placeholder_mask(
    model: nn.Module, visual_ids: Sequence[int], kwargs: dict[str, Any]
) -> Tensor | None:
    """The rows of a call's ``inputs_embeds`` that equal a visual token's input embedding.

    A call that passes ``inputs_embeds`` without ``input_ids`` has its image (and video)
    features placed by transformers at exactly these rows (``get_placeholder_mask`` of
    LLaVA, LLaVA-NeXT, Qwen2.5-VL and InternVL compares each row with the embedding of the
    image token), so they are the visual rows as surely as the token ids would be. ``[B, T]``
    bool, or ``None`` when no row matches (embeddings that already hold the features).
    """
    embeds = kwargs.get("inputs_embeds")
    if not isinstance(embeds, Tensor) or embeds.dim() != 3 or not visual_ids:
        return None
    getter = getattr(model, "get_input_embeddings", None)
    table = getter() if callable(getter) else None
    if not isinstance(table, nn.Module):
        return None
    with torch.no_grad():
        ids = torch.tensor(
            list(visual_ids), dtype=torch.long, device=module_device(table, embeds.device)
        )
        rows = table(ids).to(device=embeds.device, dtype=embeds.dtype)  # [V, D]
        mask = (embeds.detach().unsqueeze(2) == rows).all(dim=-1).any(dim=-1)  # [B, T]
    return mask if bool(mask.any()) else None


def mask_2d(kwargs: dict[str, Any]) -> Tensor | None:
    """The call's 2-D attention mask, if it passed one."""
    mask = kwargs.get("attention_mask")
    return mask if isinstance(mask, Tensor) and mask.dim() == 2 else None


def take_tapped(call: CallState) -> tuple[Tensor, Tensor] | None:
    """The tapped ``(q, k)`` projection outputs of the armed scoring layer; disarms."""
    q, k = call.tapped.get("q"), call.tapped.get("k")
    call.armed, call.tapped = None, {}
    if q is None or k is None or q.dim() != 3 or k.dim() != 3:
        return None
    return q, k


def gather_labels_in_place(labels: Tensor, plan: PrefillPlan) -> None:
    """Gather ``labels`` ``[B, T]`` to the last stage's slots (dummies ignored), in place:
    the model's loss, computed after its decoder returns, reads the same tensor object."""
    last = plan.layouts[max(plan.layouts)]
    index = last.orig_pos.to(labels.device)
    gathered = labels.gather(1, index)
    gathered = gathered.masked_fill(~last.valid.to(labels.device), IGNORE_INDEX)
    with torch.no_grad():
        labels.set_(gathered.contiguous())  # type: ignore[call-overload]  # Tensor overload
