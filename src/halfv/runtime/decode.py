"""Decode steps after a pruned prefill: each pruned layer's mask, remapped.

transformers builds decode masks for layer 0's cache, which holds the whole prompt; a
pruned layer caches its stage's slots instead, so its mask is gathered at those slots'
original positions (:func:`halfv.runtime.layout.remap_decode_mask`). Decode is
launch-bound, so the eager path remaps each stage's mask once per step (not per layer),
with no host sync; the compiled path (inside ``torch.compile``) has no per-call state
and lets the compiler merge the repeated remaps.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from halfv._compat import cache_from_kwargs
from halfv.errors import UnsupportedModelError
from halfv.runtime.layout import remap_decode_mask
from halfv.runtime.plan import PrefillPlan
from halfv.runtime.stage_inputs import hidden_of
from halfv.runtime.state import CallState, PlanStore

__all__ = ["compiled_decode_layer", "decode_layer"]


def decode_layer(
    idx: int,
    call: CallState,
    plan: PrefillPlan,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
    """Hand a pruned layer its stage's decode mask; O(1) Python, no tensor work on a hit.

    The mask of a stage is remapped on the first layer of the stage that sees a given
    mask object in this step; every later layer of the stage reuses it.
    """
    stage = plan.stage_of[idx]
    if not stage:
        return None
    mask = kwargs.get("attention_mask")
    key = (stage, id(mask))
    masks = call.decode_masks
    if key not in masks:
        call.seen_masks.append(mask)  # its id stays unique while the step runs
        masks[key] = _decode_mask(stage, call, plan, mask, hidden_of(args, kwargs))
    remapped = masks[key]
    if remapped is None and mask is None:
        return None  # SDPA without padding or dummies: nothing to change
    kwargs["attention_mask"] = remapped
    return args, kwargs


def compiled_decode_layer(
    plans: PlanStore, idx: int, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
    """The decode path inside ``torch.compile`` (transformers compiles decode steps
    only): no per-thread state, no memo, no host reads; the plan comes from the cache
    the layer is given, and repeated remaps of one mask are merged by the compiler."""
    plan = plans.get(cache_from_kwargs(kwargs))
    if plan is None or not plan.stage_of or not plan.stage_of[idx]:
        return None
    mask = kwargs.get("attention_mask")
    layout = plan.layouts[plan.stage_of[idx]]
    if not isinstance(mask, Tensor):
        if not layout.has_dummies:
            return None
        msg = (
            "halfv: a compiled decode step of a ragged batch needs the attention mask "
            "transformers builds for static caches; use cache_implementation='static'"
        )
        raise UnsupportedModelError(msg)
    hidden = hidden_of(args, kwargs)
    kwargs["attention_mask"] = remap_decode_mask(mask, layout, plan.prompt_len, hidden.shape[1], 0)
    return args, kwargs


def _decode_mask(
    stage: int, call: CallState, plan: PrefillPlan, mask: Any, hidden: Tensor
) -> Tensor | None:
    device = mask.device if isinstance(mask, Tensor) else hidden.device
    return remap_decode_mask(
        mask,
        plan.layout_on(stage, device),
        plan.prompt_len,
        hidden.shape[1],
        int(call.cache.get_seq_length()) if mask is None else 0,
    )
