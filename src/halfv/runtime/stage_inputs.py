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

__all__ = ["STAGE_INPUTS", "gather_stage_input", "hidden_of", "stage_kwargs", "with_hidden"]

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


def gather_stage_input(name: str, value: Any, layout: StageLayout) -> Any:
    """One of :data:`STAGE_INPUTS` of the full prompt, for a stage's slots."""
    if name == "position_embeddings":
        cos, sin = value
        index = layout.orig_pos.to(cos.device)
        return gather_seq(cos, index), gather_seq(sin, index)
    if name == "position_ids":
        return _gather_positions(value, layout)
    device = value.device if isinstance(value, Tensor) else layout.orig_pos.device
    return prefill_stage_mask(value, layout.to(device))


def stage_kwargs(stage: int, plan: PrefillPlan, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` of a prefill layer with the stage's gathered inputs, cached in ``plan``.

    A missing mask is built when the stage has dummy slots (a ragged batch): they must be
    hidden from every query.
    """
    layout = plan.layouts[stage]
    for name in STAGE_INPUTS:
        value = kwargs.get(name)
        if value is None and not (name == "attention_mask" and layout.has_dummies):
            continue
        key = (stage, f"{name}:{id(value)}", layout.orig_pos.device)
        if key not in plan.stage_kwargs:
            plan.stage_kwargs[key] = gather_stage_input(name, value, layout)
        kwargs[name] = plan.stage_kwargs[key]
    return kwargs
