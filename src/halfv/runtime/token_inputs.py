"""Per-token inputs added after the first decoder layers, gathered for each pruned stage.

An adapter's :class:`~halfv.interfaces.TokenInputs` names a mask and per-layer features
that the text decoder adds to the hidden states inside its own layer loop (Qwen3-VL's
DeepStack). Those are full-prompt tensors; once a prune has removed rows they no longer
line up with the sequence. During a pruned prefill:

* :class:`TakeTokenInputs` (a kwargs pre-hook on the adapter's module) takes them out of
  the call, so the model skips its own add, and keeps them with the call;
* :class:`AddTokenInputs` (a forward hook on each of the first ``max_layers`` decoder
  layers) adds layer ``i``'s features to the rows of the stage layer ``i`` ran on, with
  :func:`stage_token_rows` gathering the mask at the survivors' original positions (once
  per stage) and naming the feature rows they keep.

The add is the model's own arithmetic (``hidden[mask] = hidden[mask] + features``, on a
copy, features cast to the hidden states' dtype): with nothing pruned it is bit-equal to
the model's. Everywhere else (decode steps, text-only calls, a disabled handle) the hooks
do nothing and the model adds the inputs itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from halfv.errors import UnsupportedModelError
from halfv.runtime.layout import StageLayout
from halfv.runtime.plan import PrefillPlan

if TYPE_CHECKING:
    from halfv.interfaces import TokenInputs
    from halfv.runtime.core import PruningRuntime

__all__ = [
    "AddTokenInputs",
    "PendingTokenInputs",
    "TakeTokenInputs",
    "add_token_features",
    "stage_token_rows",
]


@dataclass
class PendingTokenInputs:
    """The token inputs taken from one prefill call.

    Attributes:
        mask: bool ``[B, T]``, the prompt rows that receive features.
        features: item ``i`` (``[mask.sum(), D]``) is added after decoder layer ``i``.
    """

    mask: Tensor
    features: Sequence[Tensor]


def add_token_features(hidden: Tensor, rows: Tensor, features: Tensor) -> Tensor:
    """``hidden`` with ``features`` added to the rows marked by ``rows`` (bool ``[B, S]``),
    as the model does it: on a copy, features moved to the hidden states' device and dtype."""
    rows = rows.to(hidden.device)
    features = features.to(hidden.device, hidden.dtype)
    hidden = hidden.clone()
    hidden[rows, :] = hidden[rows, :] + features
    return hidden


def stage_token_rows(pending: PendingTokenInputs, layout: StageLayout) -> tuple[Tensor, Tensor]:
    """Which of a stage's slots receive features, and which feature rows they take.

    The stage keeps the slots ``layout.orig_pos`` (dummy slots are not ``valid``); a slot
    receives features when its original row did. Returns the bool ``[B, S]`` mask of those
    slots and, in the stage's row-major order, the index of each one's feature row.
    """
    mask = pending.mask.to(layout.orig_pos.device).bool()
    feature_of = (mask.reshape(-1).cumsum(0) - 1).view_as(mask)  # row -> its feature index
    rows = mask.gather(1, layout.orig_pos) & layout.valid
    return rows, feature_of.gather(1, layout.orig_pos)[rows]


def _check_depth(pending: PendingTokenInputs, features_arg: str, max_layers: int) -> None:
    if len(pending.features) > max_layers:
        msg = (
            f"the call passes {len(pending.features)} `{features_arg}` tensors, but the "
            f"adapter's TokenInputs.max_layers is {max_layers}: halfv adds them after "
            "the first max_layers decoder layers only; raise max_layers in the adapter's "
            "token_inputs()"
        )
        raise UnsupportedModelError(msg)


class TakeTokenInputs:
    """Kwargs pre-hook on :attr:`TokenInputs.module`: in a pruned prefill, take the inputs
    out of the call and keep them with the call state."""

    def __init__(self, runtime: PruningRuntime, spec: TokenInputs) -> None:
        self.runtime = runtime
        self.mask_arg, self.features_arg = spec.mask_arg, spec.features_arg
        self.max_layers = spec.max_layers

    def __call__(
        self, _module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        if torch.compiler.is_compiling():
            return None
        call = self.runtime.call
        if call is None or call.mode != "prefill" or call.plan is None:
            return None
        mask, features = kwargs.get(self.mask_arg), kwargs.get(self.features_arg)
        if not isinstance(mask, Tensor) or features is None:
            return None
        pending = PendingTokenInputs(mask=mask, features=list(features))
        _check_depth(pending, self.features_arg, self.max_layers)
        call.token_inputs = pending
        kwargs[self.mask_arg] = None
        kwargs[self.features_arg] = None
        return args, kwargs


class AddTokenInputs:
    """Forward hook on decoder layer ``idx``: add the layer's taken features to the rows of
    the stage it ran on."""

    def __init__(self, runtime: PruningRuntime, idx: int) -> None:
        self.runtime, self.idx = runtime, idx

    def __call__(self, _module: nn.Module, _args: Any, output: Any) -> Any:
        if torch.compiler.is_compiling():
            return None
        call = self.runtime.call
        if call is None or call.mode != "prefill" or call.plan is None:
            return None
        pending = call.token_inputs
        if pending is None or self.idx >= len(pending.features):
            return None
        rows, features = _gathered(call.plan, pending, self.idx)
        hidden = output[0] if isinstance(output, tuple) else output
        added = add_token_features(hidden, rows, features)
        return (added, *output[1:]) if isinstance(output, tuple) else added


def _gathered(plan: PrefillPlan, pending: PendingTokenInputs, idx: int) -> tuple[Tensor, Tensor]:
    """Layer ``idx``'s mask and features for the stage it ran on (the stage's rows are
    found once per prefill and kept in the plan)."""
    features = pending.features[idx]
    stage = max((s for s in plan.layouts if 0 < s <= idx), default=0)
    if stage == 0:
        return pending.mask.bool(), features
    key = (stage, "token_inputs", pending.mask.device)
    if key not in plan.stage_kwargs:
        plan.stage_kwargs[key] = stage_token_rows(pending, plan.layouts[stage])
    rows, index = plan.stage_kwargs[key]
    return rows, features[index.to(features.device)]
