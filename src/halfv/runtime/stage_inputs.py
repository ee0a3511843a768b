"""What each decoder layer of a pruned stage receives: pure wiring, no model references.

transformers builds the rotary tables, position ids and attention mask once, for the
whole prompt, and hands the same objects to every decoder layer. A layer after a prune
sees fewer rows, so these are gathered at the survivors' *original* positions, once per
stage and object (cached in the plan), and every layer of the stage reuses them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from halfv.runtime.layout import StageLayout, gather_seq, prefill_stage_mask
from halfv.runtime.plan import PrefillPlan

__all__ = [
    "STAGE_INPUTS",
    "gather_stage_input",
    "hidden_of",
    "linear_stage_mask",
    "stage_kwargs",
    "with_hidden",
]

#: the layer kwargs that depend on the sequence and are gathered per stage
STAGE_INPUTS = ("position_embeddings", "position_ids", "attention_mask")


def hidden_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Tensor:
    """A decoder layer's hidden states, passed positionally or by keyword."""
    return args[0] if args else kwargs["hidden_states"]  # type: ignore[no-any-return]


def with_hidden(
    hidden: Tensor, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The call arguments with ``hidden`` in place of the hidden states."""
    if args:
        return (hidden, *args[1:]), kwargs
    kwargs["hidden_states"] = hidden
    return args, kwargs


def _gather_positions(position_ids: Tensor, layout: StageLayout) -> Tensor:
    index = layout.orig_pos.to(position_ids.device)
    if position_ids.dim() == 3:  # [C, B, T] multi-axis positions
        return torch.stack([gather_seq(p, index) for p in position_ids])
    return gather_seq(position_ids, index)


def linear_stage_mask(mask: Tensor | None, layout: StageLayout) -> Tensor | None:
    """The 2-D padding mask a linear-attention layer of a stage reads (``[B, S]``).

    Such a layer zeroes the rows its 2-D mask marks as padding before its recurrence
    (``apply_mask_to_padding_states`` in transformers' Qwen3.5); a stage's dummy slots
    are front padding too. ``None`` when no slot is padding.
    """
    if mask is None and not layout.has_dummies:
        return None
    valid = layout.valid
    if mask is None:
        return valid.long()
    gathered = gather_seq(mask, layout.orig_pos.to(mask.device))
    return torch.where(valid.to(mask.device), gathered, torch.zeros_like(gathered))


def gather_stage_input(name: str, value: Any, layout: StageLayout, linear: bool = False) -> Any:
    """One of :data:`STAGE_INPUTS` of the full prompt, for a stage's slots (``linear``:
    for a linear-attention layer, whose mask is 2-D)."""
    if name == "attention_mask" and linear:
        return linear_stage_mask(value, layout)
    if name == "position_embeddings":
        cos, sin = value
        index = layout.orig_pos.to(cos.device)
        return gather_seq(cos, index), gather_seq(sin, index)
    if name == "position_ids":
        return _gather_positions(value, layout)
    device = value.device if isinstance(value, Tensor) else layout.orig_pos.device
    return prefill_stage_mask(value, layout.to(device))


def stage_kwargs(
    stage: int, plan: PrefillPlan, kwargs: dict[str, Any], linear: bool = False
) -> dict[str, Any]:
    """``kwargs`` of a prefill layer with the stage's gathered inputs, cached in ``plan``.

    A missing mask is built when the stage has dummy slots (a ragged batch): they must be
    hidden from every query (``linear``: a linear-attention layer's 2-D padding mask).
    """
    layout = plan.layouts[stage]
    for name in STAGE_INPUTS:
        value = kwargs.get(name)
        if value is None and not (name == "attention_mask" and layout.has_dummies):
            continue
        key = (stage, f"{name}:{id(value)}:{linear}", layout.orig_pos.device)
        if key not in plan.stage_kwargs:
            plan.stage_kwargs[key] = gather_stage_input(name, value, layout, linear)
        kwargs[name] = plan.stage_kwargs[key]
    return kwargs
