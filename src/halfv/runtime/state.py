"""Per-call state: what one forward of a pruned model knows, and where it lives.

Every forward call of an applied model gets its own :class:`CallState`, opened by the
first halfv hook the call reaches (the model's outer module, or the entry module that
receives ``input_ids``) and closed by the same module's always-called exit hook. The
current call of a runtime is kept per thread (:class:`CallSlot`), so two threads running
``generate`` on one applied model never see each other's state.

A pruned prefill's :class:`~halfv.runtime.plan.PrefillPlan` outlives its call: it is
stored with the KV cache object the prefill filled (:class:`PlanStore`), so decode steps,
from ``generate`` or a hand-written loop, find it through the cache they are given,
several generations can be in flight at once, each with its own cache, and a copied
cache carries its plan.
"""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import Tensor

from halfv.errors import UnsupportedModelError
from halfv.runtime.plan import PrefillPlan, SkippedCall
from halfv.runtime.scoring import PendingScore

__all__ = ["CallSlot", "CallState", "PlanStore"]


@dataclass
class CallState:
    """Everything one forward call of an applied model knows.

    Attributes:
        mode: ``pass`` (nothing to do), ``prefill`` (a prompt with visual tokens is being
            pruned) or ``decode`` (a step after a pruned prefill).
        plan: the prefill's plan (built in this call, or found with the cache in decode).
        cache: the KV cache object of the call.
        opened_by: ``outer`` or ``entry``: which hook opened the call (and closes it).
        logits_to_keep: the caller's ``logits_to_keep`` (an int), read at the outer
            module: the first position whose logits are read is the query position.
        labels: training labels taken from the outer call; they are gathered to the
            kept rows (in place, on a private copy) before the model computes its loss.
        record_outputs: the caller asked for attention weights; frozen layers then run
            their own forward and restore the visual rows, so every layer reports.
        static_cache: the call's cache is a ``StaticCache`` (pruned layers are sized).
        decode_masks, seen_masks: decode-step masks, one per stage, mask object and cache
            shape (:mod:`halfv.runtime.decode`).
        step_mask: a decode step's 2-D attention mask, if the call passed one.
        pending: a scoring layer's inputs, kept until its projections are tapped.
        armed: the scoring layer whose ``q_proj``/``k_proj`` outputs are being kept.
        tapped: those outputs.
        backends: the SDPA backend context entered for a decode step.
        token_inputs: the adapter's per-token inputs taken from a pruned prefill
            (:mod:`halfv.runtime.token_inputs`).
    """

    mode: Literal["pass", "prefill", "decode"] = "pass"
    plan: PrefillPlan | None = None
    cache: Any = None
    opened_by: Literal["outer", "entry"] = "entry"
    logits_to_keep: int | None = None
    labels: Tensor | None = None
    record_outputs: bool = False
    static_cache: bool = False
    decode_masks: dict[tuple[Any, ...], Tensor | None] = field(default_factory=dict)
    step_mask: Tensor | None = None
    seen_masks: list[Any] = field(default_factory=list)
    pending: PendingScore | None = None
    armed: int | None = None
    tapped: dict[str, Tensor] = field(default_factory=dict)
    backends: AbstractContextManager[None] | None = None
    token_inputs: Any = None


class CallSlot(threading.local):
    """The current call of one runtime, per thread.

    Attributes:
        call: the open call, or ``None`` between calls.
        visual_mask: a visual mask the caller supplied for its next ``inputs_embeds`` call
            (see :meth:`halfv.PruningHandle.visual_positions`).
        last_plan: the last pruned prefill this thread ran.
        last_skip: this thread's last prefill if the gate ran it unpruned (then
            ``last_plan`` is ``None``).
    """

    call: CallState | None = None
    visual_mask: Tensor | None = None
    last_plan: PrefillPlan | None = None
    last_skip: SkippedCall | None = None


_PLANS_ATTRIBUTE = "_halfv_plans"


class PlanStore:
    """Plans of pruned prefills, kept on the KV cache object each one filled.

    A plan lives as an attribute of its cache (keyed by the runtime that made it), so it
    goes with the cache: it is freed with it, and a ``copy.deepcopy`` of a prefilled cache
    (transformers' recipe for reusing a prompt's cache) carries the plan to the copy.
    Reading it is a plain attribute lookup, which ``torch.compile`` traces without a
    graph break.
    """

    def __init__(self, key: str) -> None:
        self.key = key

    def get(self, cache: Any) -> PrefillPlan | None:
        """The plan stored with ``cache``, if any."""
        plans = getattr(cache, _PLANS_ATTRIBUTE, None)
        return None if plans is None else plans.get(self.key)

    def put(self, cache: Any, plan: PrefillPlan) -> None:
        """Store ``plan`` with ``cache`` (replacing any earlier plan of that cache)."""
        plans = getattr(cache, _PLANS_ATTRIBUTE, None)
        if plans is None:
            try:
                setattr(cache, _PLANS_ATTRIBUTE, {self.key: plan})
            except AttributeError:
                msg = (
                    f"halfv cannot keep its plan with a {type(cache).__name__} (it takes no "
                    "attributes); use a transformers DynamicCache or StaticCache"
                )
                raise UnsupportedModelError(msg) from None
        else:
            plans[self.key] = plan

    def forget(self, cache: Any) -> None:
        """Drop the plan of ``cache`` (a new prefill into an emptied cache)."""
        plans = getattr(cache, _PLANS_ATTRIBUTE, None)
        if plans is not None:
            plans.pop(self.key, None)
