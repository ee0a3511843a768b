"""How one forward call of an applied model is opened, classified and closed.

The first halfv hook a call reaches (the outer model's, else the entry module's) opens a
:class:`~halfv.runtime.state.CallState` for the current thread; the entry module's hook
decides what the call is: a **prefill** (empty cache, visual tokens in the prompt: a
plan is built), a **decode** step (the cache carries a pruned prefill's plan), or a
**pass** (text only, ``inputs_embeds`` without visual positions, or halfv disabled).
The same module's always-called exit hook closes it: a finished prefill's plan is stored
with its cache and its labels are gathered to the kept rows.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from halfv._compat import cache_from_kwargs
from halfv.config import PruningConfig
from halfv.errors import UnsupportedModelError
from halfv.interfaces import BackboneAdapter
from halfv.ops.spans import VisualSpans
from halfv.runtime.caches import check_cache, is_static_cache, reset_static_layers
from halfv.runtime.gate import CostGate
from halfv.runtime.plan import PrefillPlan, SkippedCall
from halfv.runtime.sdpa_backends import decode_backends_without_cudnn
from halfv.runtime.stages import gather_labels_in_place, placeholder_mask, prefill_spans
from halfv.runtime.state import CallSlot, CallState, PlanStore
from halfv.runtime.video import group_spans

__all__ = ["SUPPORTED_ATTENTION", "CallLifecycle"]

SUPPORTED_ATTENTION = ("sdpa", "eager")


def check_router_logits(plan: PrefillPlan, kwargs: dict[str, Any]) -> None:
    """Refuse ``output_router_logits=True`` in a prefill that removes rows.

    A mixture-of-experts model's router logits of a pruned layer cover only the rows that
    layer ran, and the model's load-balancing loss weighs every layer's logits with the
    full prompt's attention mask: the shapes disagree, or the loss silently mixes stages.
    """
    if plan.would_shorten and kwargs.get("output_router_logits"):
        msg = (
            "output_router_logits=True in a pruned prefill: the router logits of pruned "
            "layers cover only the kept rows, so the model's load-balancing loss cannot be "
            "computed on them. Pass output_router_logits=False (and set "
            "config.text_config.output_router_logits=False), or run that call with halfv "
            "off (`with handle.disabled(): ...`)"
        )
        raise UnsupportedModelError(msg)


class CallLifecycle:
    """The call-state half of :class:`halfv.runtime.core.PruningRuntime`."""

    model: nn.Module
    adapter: BackboneAdapter
    config: PruningConfig
    layers: Sequence[nn.Module]
    visual_ids: tuple[int, ...]
    joiner_ids: tuple[int, ...]
    ssr_mode: str
    enabled: bool
    decode_without_cudnn: bool
    _slot: CallSlot
    _plans: PlanStore
    _last_plan: PrefillPlan | None
    _last_skip: SkippedCall | None
    gate: CostGate
    _stats_lock: threading.Lock
    _warned_embeds: bool

    def check_attention(self) -> None:
        """Refuse attention implementations whose masks halfv cannot rewrite."""
        lm_config = getattr(self.adapter.language_model(self.model), "config", None)
        impl = getattr(lm_config, "_attn_implementation", None) or "eager"
        if impl not in SUPPORTED_ATTENTION:
            msg = (
                f"attention implementation {impl!r} is not supported by halfv (it needs 4-D "
                f"masks); supported: {', '.join(SUPPORTED_ATTENTION)}. Call "
                "model.set_attn_implementation('sdpa') first"
            )
            raise UnsupportedModelError(msg)

    # ------------------------------------------------------------------ call state
    @property
    def call(self) -> CallState | None:
        """The open call of the current thread."""
        return self._slot.call

    def supply_visual_mask(self, mask: Tensor | None) -> None:
        """A visual mask for this thread's next ``inputs_embeds`` call."""
        self._slot.visual_mask = mask

    def open_outer(self, kwargs: dict[str, Any]) -> None:
        if self._slot.call is not None:
            return  # re-entered (a wrapper calling forward twice): the first call owns it
        call = CallState(opened_by="outer")
        self._slot.call = call
        if not self.enabled:
            return
        keep = kwargs.get("logits_to_keep")
        call.logits_to_keep = keep if isinstance(keep, int) and keep > 0 else None
        call.record_outputs = self._wants_attentions(kwargs)
        labels = kwargs.get("labels")
        if isinstance(labels, Tensor) and labels.dim() == 2:
            # A private copy the model's loss reads; gathered in place to the kept rows
            # when the prefill prunes (halfv.runtime.core.PruningRuntime.close_entry).
            call.labels = labels.clone()
            kwargs["labels"] = call.labels

    def _wants_attentions(self, kwargs: dict[str, Any]) -> bool:
        """Whether this call returns attention weights: the call's argument, else the
        model's config (or its text config) default."""
        asked = kwargs.get("output_attentions")
        if asked is not None:
            return bool(asked)
        config = getattr(self.model, "config", None)
        text = getattr(config, "text_config", None)
        return any(bool(getattr(c, "output_attentions", False)) for c in (config, text))

    def close_outer(self) -> None:
        call = self._slot.call
        if call is not None and call.opened_by == "outer":
            self._slot.call = None

    def open_entry(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        call = self._slot.call
        if call is None:
            call = CallState(opened_by="entry")
            self._slot.call = call
        if not self.enabled:
            return
        call.record_outputs = call.record_outputs or self._wants_attentions(kwargs)
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        supplied, self._slot.visual_mask = self._slot.visual_mask, None
        cache = cache_from_kwargs(kwargs)
        cached = cache.get_seq_length() if cache is not None else 0
        if cached > 0:
            plan = self._plans.get(cache)
            if plan is not None:
                self._start_decode(call, plan, cache, kwargs)
            return
        if cache is not None:
            self._plans.forget(cache)
            if is_static_cache(cache):
                reset_static_layers(cache)
        found = self._find_spans(call, input_ids, supplied, kwargs)
        if found is None:
            return
        spans, mask2d, query_pos = found
        if not spans.any:
            return  # text-only prompts pass through untouched
        spans, groups = group_spans(
            self.adapter, self.model, spans, input_ids, kwargs, mode=self.config.video_budget
        )
        self.check_attention()
        gate = self.gate.decide(spans, spans.mask.device, self._dtype())
        stages = {s.stage: s.ran for s in gate.stages}
        if not stages["ivr"]:  # the cost model says pruning cannot pay: run unpruned
            b, t = spans.mask.shape
            skipped = SkippedCall(spans.spans, spans.span_sizes, int(b), int(t), len(self.layers))
            skipped.gate, skipped.groups = gate, groups
            self._record_skip(skipped)
            return
        ssr_mode = self.ssr_mode if stages.get("ssr", False) else "none"
        ssr_keep = self.config.ssr_keep if ssr_mode == "prune" else 1.0
        plan = PrefillPlan.build(spans, mask2d, self.config.ivr_keep, ssr_keep, query_pos=query_pos)
        plan.groups, plan.ssr_mode, plan.gate = groups, ssr_mode, gate
        check_router_logits(plan, kwargs)
        call.mode = "prefill"
        call.cache = cache
        call.plan = plan
        if call.plan.would_shorten:
            check_cache(cache)
        call.static_cache = is_static_cache(cache)

    def _find_spans(
        self, call: CallState, input_ids: Any, supplied: Tensor | None, kwargs: dict[str, Any]
    ) -> tuple[VisualSpans, Tensor | None, Tensor] | None:
        """The prefill's spans, 2-D mask and query positions (:func:`prefill_spans`), with
        one warning per runtime when ``inputs_embeds`` hide the visual rows."""
        if supplied is None and not isinstance(input_ids, Tensor):
            # inputs_embeds alone: the rows that still hold a visual token's embedding are
            # where transformers puts the image features (stages.placeholder_mask)
            supplied = placeholder_mask(self.model, self.visual_ids, kwargs)
        found = prefill_spans(
            self.visual_ids,
            call.logits_to_keep,
            input_ids,
            supplied,
            kwargs,
            joiner_ids=self.joiner_ids,
        )
        if found is None and kwargs.get("inputs_embeds") is not None and not self._warned_embeds:
            self._warned_embeds = True
            warnings.warn(
                "halfv: this call passes inputs_embeds without input_ids, and no row holds a "
                "visual token's embedding (the features are already merged), so halfv cannot "
                "see which rows are visual and does not prune it. Pass input_ids (with "
                "pixel_values), or give the visual rows with "
                "`with handle.visual_positions(mask): model(inputs_embeds=...)`",
                stacklevel=5,
            )
        return found

    def _dtype(self) -> Any:
        """The decoder's compute dtype (its last layer's first parameter; read per call, so
        a ``model.to(dtype)`` after ``apply`` is seen)."""
        param = next(self.layers[-1].parameters(), None)
        return param.dtype if param is not None else None

    def _record_skip(self, skipped: SkippedCall) -> None:
        """Keep the record of a call the gate ran unpruned (``handle.stats``)."""
        self._slot.last_plan, self._slot.last_skip = None, skipped
        with self._stats_lock:
            self._last_plan, self._last_skip = None, skipped

    def _start_decode(self, call: CallState, plan: PrefillPlan, cache: Any, kwargs: Any) -> None:
        call.mode, call.plan, call.cache = "decode", plan, cache
        call.static_cache = is_static_cache(cache)
        step_mask = kwargs.get("attention_mask")
        call.step_mask = (
            step_mask if isinstance(step_mask, Tensor) and step_mask.dim() == 2 else None
        )
        if self.decode_without_cudnn and plan.shortens_cache:
            ids = kwargs.get("input_ids")
            device = ids.device if isinstance(ids, Tensor) else None
            if device is not None:
                call.backends = decode_backends_without_cudnn(device)
                if call.backends is not None:
                    call.backends.__enter__()

    def close_entry(self) -> None:
        call = self._slot.call
        if call is None:
            return
        if call.opened_by == "entry":
            self._slot.call = None
        if call.backends is not None:
            call.backends.__exit__(None, None, None)
            call.backends = None
        call.armed, call.tapped, call.pending = None, {}, None
        plan = call.plan
        if plan is None:
            return
        if call.mode == "decode":
            plan.decode_steps += 1
            return
        if call.mode != "prefill":
            return
        call.mode = "pass"  # the outer module's own work (LM head, loss) is not a prefill
        plan.stage_kwargs.clear()
        plan.scores = None
        if self.config.ivr_layer not in plan.layouts:  # the prune never happened
            return
        plan.stage_of = plan.stage_table(len(self.layers))
        for layout in plan.layouts.values():
            _ = layout.valid_cols, layout.dummy_cols  # built now, not inside a traced step
        if call.labels is not None:
            gather_labels_in_place(call.labels, plan)
        self._slot.last_plan, self._slot.last_skip = plan, None
        with self._stats_lock:
            self._last_plan, self._last_skip = plan, None
        if call.cache is not None:
            self._plans.put(call.cache, plan)
