"""Model wiring: removable hooks that run a HalfV schedule inside a transformers model.

Nothing here swaps classes or edits weights. :class:`PruningRuntime` installs

* a pre-hook and an always-called post-hook on the model itself (the *outer* module,
  when it is not the entry module), which read ``logits_to_keep`` and ``labels``;
* the same pair on the adapter's *entry module* (the module that receives
  ``input_ids``), which decide what the call is (prefill, decode, pass-through);
* a kwargs pre-hook on every decoder layer from the one before the IVR layer on (earlier
  layers see the whole prompt and need nothing), which scores, selects and gathers at the
  pruning layers and hands every later layer the stage's rotary tables, position ids and
  masks (gathered at the survivors' *original* positions);
* forward hooks on the scoring layers' ``q_proj``/``k_proj`` (their outputs are the
  relevance inputs, :mod:`halfv.runtime.scoring`);
* for ``ssr_mode="freeze"``, an instance-level ``forward`` on each frozen layer that falls
  back to the original forward outside a pruned prefill.

Every hook is a small object holding the runtime (no closures), so ``copy.deepcopy`` and
pickling of an applied model give a model whose hooks belong to the copy. Per-call state
lives in a :class:`~halfv.runtime.state.CallState` per thread, and a pruned prefill's plan
is stored with the KV cache it filled (:mod:`halfv.runtime.state`).

A call is a prefill when its cache is empty and its prompt has visual tokens; the query
position is the first position whose logits the caller reads (``T - logits_to_keep``,
which is the last prompt token in ``generate`` and in assisted decoding's first pass), or
the last real token. It is never pruned. Decode is launch-bound, so its path is kept
lean: each stage's mask is remapped once per step (not per layer), with no host sync.
"""

from __future__ import annotations

import copy
import threading
import warnings
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from halfv._compat import cache_from_kwargs
from halfv.config import PruningConfig
from halfv.devices import module_device
from halfv.errors import HalfvValueError, UnsupportedModelError
from halfv.interfaces import AttentionParts, BackboneAdapter, IVRPolicy, SSRPolicy
from halfv.ops.spans import VisualSpans, find_visual_spans, spans_from_mask
from halfv.runtime.caches import (
    check_cache,
    is_static_cache,
    reset_static_layers,
    size_static_layer,
)
from halfv.runtime.distributed import check_tensor_parallel, head_group
from halfv.runtime.freeze import frozen_visual_forward
from halfv.runtime.layout import StageLayout, gather_rows, next_layout, remap_decode_mask
from halfv.runtime.plan import PrefillPlan, PruneStats, select_per_span
from halfv.runtime.scoring import PendingScore
from halfv.runtime.sdpa_backends import decode_backends_without_cudnn
from halfv.runtime.stage_inputs import hidden_of, stage_kwargs, with_hidden
from halfv.runtime.state import CallSlot, CallState, PlanStore

__all__ = ["SUPPORTED_ATTENTION", "PruningRuntime", "find_runtime"]

SUPPORTED_ATTENTION = ("sdpa", "eager")
ResolvedSSR = Literal["prune", "freeze", "none"]
_IGNORE_INDEX = -100


class PruningRuntime:
    """Installs and removes the hooks that execute one pruning schedule."""

    def __init__(
        self,
        model: nn.Module,
        adapter: BackboneAdapter,
        config: PruningConfig,
        *,
        ivr_policy: IVRPolicy,
        ssr_policy: SSRPolicy,
        ssr_mode: ResolvedSSR,
    ) -> None:
        self.model = model
        self.adapter = adapter
        self.config = config
        self.ivr_policy = ivr_policy
        self.ssr_policy = ssr_policy
        self.ssr_mode: ResolvedSSR = ssr_mode if config.ssr_layer is not None else "none"
        self.layers: Sequence[nn.Module] = adapter.decoder_layers(model)
        config.check_depth(len(self.layers))
        self.parts: list[AttentionParts] = [adapter.attention_parts(la) for la in self.layers]
        self.cache_index = [
            int(getattr(getattr(la, "self_attn", None), "layer_idx", i) or i)
            for i, la in enumerate(self.layers)
        ]
        self.final_norm = adapter.final_norm(model)
        self.visual_ids = adapter.visual_token_ids(model)
        self.entry = adapter.entry_module(model)
        self.enabled = True
        #: run pruned decode steps without cuDNN attention (see halfv.runtime.sdpa_backends)
        self.decode_without_cudnn = True
        #: the handle that owns this runtime (set by halfv.pipeline; copied with it)
        self.handle: Any = None
        #: the key of this runtime's plans on KV caches (kept by copies of the model, whose
        #: schedule is the same: a copy may decode from a cache the original prefilled)
        self.plan_key = f"{id(self):x}"
        self.scoring_layers = self._scoring_layers()
        check_tensor_parallel((i, self.parts[i]) for i in self.scoring_layers)
        self._handles: list[RemovableHandle] = []
        self._overrides: list[tuple[nn.Module, Any]] = []
        self._fresh_state()
        self.check_attention()

    def _fresh_state(self) -> None:
        self._slot = CallSlot()
        self._plans = PlanStore(self.plan_key)
        self._last_plan: PrefillPlan | None = None
        self._stats_lock = threading.Lock()
        self._warned_embeds = False

    # ------------------------------------------------------------------ copies
    def __deepcopy__(self, memo: dict[int, Any]) -> PruningRuntime:
        """A runtime for the copied model: same schedule, hooks bound to the copy, no
        per-call state (plans of the original's caches stay with the original)."""
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        skip = {"_slot", "_plans", "_last_plan", "_stats_lock"}
        for key, value in self.__dict__.items():
            if key not in skip:
                setattr(new, key, copy.deepcopy(value, memo))
        new._fresh_state()
        return new

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for key in ("_slot", "_plans", "_last_plan", "_stats_lock"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._fresh_state()

    # ------------------------------------------------------------------ install
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

    def install(self) -> None:
        """Register every hook (handles call this once)."""
        if self.model is not self.entry:
            self._handles.append(
                self.model.register_forward_pre_hook(_OuterEnter(self), with_kwargs=True)
            )
            self._handles.append(
                self.model.register_forward_hook(
                    _OuterExit(self), with_kwargs=True, always_call=True
                )
            )
        self._handles.append(
            self.entry.register_forward_pre_hook(_EntryEnter(self), with_kwargs=True)
        )
        self._handles.append(
            self.entry.register_forward_hook(_EntryExit(self), with_kwargs=True, always_call=True)
        )
        for idx in self.scoring_layers:
            parts = self.parts[idx]
            for name, module in (("q", parts.q_proj), ("k", parts.k_proj)):
                self._handles.append(module.register_forward_hook(_Tap(self, idx, name)))
        first = self.config.ivr_layer - 1  # the IVR scoring layer: nothing happens before it
        for idx, layer in enumerate(self.layers):
            if idx >= first:
                hook = _LayerEnter(self, idx)
                self._handles.append(layer.register_forward_pre_hook(hook, with_kwargs=True))
            if self.ssr_mode == "freeze" and idx >= (self.config.ssr_layer or 0):
                previous = layer.__dict__.get("forward")  # e.g. an accelerate device hook
                layer.forward = _FrozenForward(self, idx, layer.forward)
                self._overrides.append((layer, previous))

    def remove(self) -> None:
        """Remove every hook and restore every overridden ``forward``."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for layer, previous in reversed(self._overrides):
            if previous is None:
                layer.__dict__.pop("forward", None)
            else:
                layer.forward = previous
        self._overrides.clear()
        self._slot = CallSlot()

    @property
    def installed(self) -> bool:
        """Whether the hooks are in place."""
        return bool(self._handles)

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
        self.check_attention()
        call.mode = "prefill"
        call.cache = cache
        ssr_keep = self.config.ssr_keep if self.ssr_mode == "prune" else 1.0
        call.plan = PrefillPlan.build(
            spans, mask2d, self.config.ivr_keep, ssr_keep, query_pos=query_pos
        )
        if call.plan.would_shorten:
            check_cache(cache)
        call.static_cache = is_static_cache(cache)

    def _find_spans(
        self, call: CallState, input_ids: Any, supplied: Tensor | None, kwargs: dict[str, Any]
    ) -> tuple[VisualSpans, Tensor | None, Tensor] | None:
        """The visual spans of a prefill (from ``input_ids`` or a supplied mask), its 2-D
        attention mask and query positions; ``None`` when the rows cannot be told apart."""
        mask2d = _mask_2d(kwargs)
        if isinstance(input_ids, Tensor) and input_ids.dim() == 2:
            query_pos = self._query_positions(input_ids.shape, mask2d, input_ids.device, call)
            spans = find_visual_spans(input_ids, self.visual_ids, keep_positions=query_pos)
            return spans, mask2d, query_pos
        embeds = kwargs.get("inputs_embeds")
        if supplied is not None:
            shape = tuple(supplied.shape)
            if isinstance(embeds, Tensor) and tuple(embeds.shape[:2]) != shape:
                msg = (
                    f"the visual mask given to handle.visual_positions has shape {shape}, "
                    f"but inputs_embeds is {tuple(embeds.shape)}: pass a [batch, seq] mask"
                )
                raise HalfvValueError(msg)
            query_pos = self._query_positions(shape, mask2d, supplied.device, call)
            return spans_from_mask(supplied.bool(), keep_positions=query_pos), mask2d, query_pos
        if embeds is not None and not self._warned_embeds:
            self._warned_embeds = True
            warnings.warn(
                "halfv: this call passes inputs_embeds without input_ids, so halfv cannot "
                "see which rows are visual and does not prune it. Pass input_ids (with "
                "pixel_values), or give the visual rows with "
                "`with handle.visual_positions(mask): model(inputs_embeds=...)`",
                stacklevel=5,
            )
        return None

    def _query_positions(
        self,
        shape: tuple[int, ...],
        mask2d: Tensor | None,
        device: torch.device,
        call: CallState,
    ) -> Tensor:
        """``[B]`` query position of each sample: its last real token, or the first
        position whose logits the caller reads, whichever is earlier."""
        b, t = int(shape[0]), int(shape[1])
        if mask2d is None:
            last = torch.full((b,), t - 1, device=device, dtype=torch.long)
        else:
            positions = torch.arange(t, device=device).expand(b, t)
            last = torch.where(mask2d.to(device).bool(), positions, -1).amax(dim=1)
        if call.logits_to_keep is not None and call.logits_to_keep < t:
            last = last.clamp(max=t - call.logits_to_keep)
        return last

    def _start_decode(self, call: CallState, plan: PrefillPlan, cache: Any, kwargs: Any) -> None:
        call.mode, call.plan, call.cache = "decode", plan, cache
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
            _gather_labels_in_place(call.labels, plan)
        self._slot.last_plan = plan
        with self._stats_lock:
            self._last_plan = plan
        if call.cache is not None:
            self._plans.put(call.cache, plan)

    # ------------------------------------------------------------------ layers
    def layer_enter(
        self, idx: int, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        call = self._slot.call
        if call is None or call.plan is None:
            return None
        if call.mode == "decode":
            return self._decode_layer(idx, call, call.plan, args, kwargs)
        if call.mode == "prefill":
            return self._prefill_layer(idx, call, call.plan, args, kwargs)
        return None

    def _prefill_layer(
        self,
        idx: int,
        call: CallState,
        plan: PrefillPlan,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        cfg = self.config
        if call.cache is None:
            call.cache = cache_from_kwargs(kwargs)
            if plan.would_shorten:
                check_cache(call.cache)
            call.static_cache = is_static_cache(call.cache)
        hidden = hidden_of(args, kwargs)
        if call.pending is not None:  # the scoring layer ran: its projections are tapped
            plan.scores = call.pending.scores(_take_tapped(call))
            call.pending = None
        if idx == cfg.ivr_layer:
            hidden = self._transition(idx, plan, hidden, self.ivr_policy, stage="ivr")
        if self.ssr_mode == "prune" and idx == cfg.ssr_layer:
            hidden = self._transition(idx, plan, hidden, self.ssr_policy, stage="ssr")
        stage = max((s for s in plan.layouts if 0 < s <= idx), default=0)
        if stage:
            kwargs = stage_kwargs(stage, plan, kwargs)
            removed = plan.prompt_len - plan.layouts[stage].length
            if removed > 0 and call.static_cache:
                size_static_layer(call.cache, self.cache_index[idx], removed)
        if idx in self.scoring_layers:
            call.pending = self._pending_score(idx, plan, hidden, kwargs)
            call.armed, call.tapped = idx, {}
        return with_hidden(hidden, args, kwargs)

    def _scoring_layers(self) -> dict[int, bool]:
        """``{layer: rope}`` of the layers whose relevance a later prune reads."""
        cfg, layers = self.config, {}
        if self.ivr_policy.needs_scores:
            layers[cfg.ivr_layer - 1] = False
        if self.ssr_mode == "prune" and self.ssr_policy.needs_scores:
            layers[(cfg.ssr_layer or 0) - 1] = True
        return layers

    def tap(self, idx: int, name: str, output: Any) -> None:
        call = self._slot.call
        if call is not None and call.armed == idx and isinstance(output, Tensor):
            call.tapped[name] = output.detach()

    def _decode_layer(
        self,
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
            masks[key] = self._decode_mask(stage, call, plan, mask, hidden_of(args, kwargs))
        remapped = masks[key]
        if remapped is None and mask is None:
            return None  # SDPA without padding or dummies: nothing to change
        kwargs["attention_mask"] = remapped
        return args, kwargs

    def compiled_decode_layer(
        self, idx: int, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        """The decode path inside ``torch.compile`` (transformers compiles decode steps
        only): no per-thread state, no memo, no host reads; the plan comes from the cache
        the layer is given, and repeated remaps of one mask are merged by the compiler."""
        plan = self._plans.get(cache_from_kwargs(kwargs))
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
        kwargs["attention_mask"] = remap_decode_mask(
            mask, layout, plan.prompt_len, hidden.shape[1], 0
        )
        return args, kwargs

    @staticmethod
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

    def frozen_forward(
        self, idx: int, original: Callable[..., Any], args: tuple[Any, ...], kwargs: Any
    ) -> Any:
        call = self._slot.call
        if call is None or call.mode != "prefill" or call.plan is None:
            return original(*args, **kwargs)
        layout = call.plan.layout_at(idx)
        if layout is None:
            return original(*args, **kwargs)
        hidden = hidden_of(args, kwargs)
        if call.record_outputs or (torch.is_grad_enabled() and hidden.requires_grad):
            # The layer's own forward, then the visual rows put back: the same text rows
            # and cache, with the layer's attention weights reported (and autograd intact).
            out = original(*args, **kwargs)
            updated = out[0] if isinstance(out, tuple) else out
            keep = (layout.visual | ~layout.valid).to(updated.device)[..., None]
            restored = torch.where(keep, hidden.to(updated.device), updated)
            return (restored, *out[1:]) if isinstance(out, tuple) else restored
        return frozen_visual_forward(
            self.parts[idx],
            hidden,
            position_embeddings=kwargs["position_embeddings"],
            stage_mask=kwargs.get("attention_mask"),
            layout=layout,
            cache=cache_from_kwargs(kwargs),
            layer_idx=self.cache_index[idx],
            memo=call.plan.stage_kwargs,
        )

    # ------------------------------------------------------------------ scoring
    @torch.no_grad()
    def _pending_score(
        self, idx: int, plan: PrefillPlan, hidden: Tensor, kwargs: dict[str, Any]
    ) -> PendingScore:
        layout = plan.current_layout(idx)
        rows, segment = plan.visual_rows(layout)
        rotary = None
        if self.scoring_layers[idx]:  # the SSR pass scores with RoPE
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
            parts=self.parts[idx],
            rotary=rotary,
            scale=self.config.relevance_scaling,
            head_group=head_group(self.parts[idx], idx),  # tensor parallelism: sum heads
        )

    @torch.no_grad()
    def _select(
        self,
        idx: int,
        plan: PrefillPlan,
        hidden: Tensor,
        policy: IVRPolicy | SSRPolicy,
        stage: Literal["ivr", "ssr"],
    ) -> StageLayout:
        """Choose the survivors of a pruning layer; returns the new stage's layout."""
        layout = plan.current_layout(idx - 1)
        rows = layout.visual_rows
        b, s, d = hidden.shape
        features = None
        if policy.needs_features:
            flat = hidden.detach().reshape(b * s, d)[rows.to(hidden.device)]
            norm_device = module_device(self.final_norm, flat.device)
            features = self.final_norm(flat.to(norm_device))
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
        return new_layout

    def _transition(
        self,
        idx: int,
        plan: PrefillPlan,
        hidden: Tensor,
        policy: IVRPolicy | SSRPolicy,
        stage: Literal["ivr", "ssr"],
    ) -> Tensor:
        """Prune at layer ``idx``: select, then gather the hidden states of the survivors."""
        layout = self._select(idx, plan, hidden, policy, stage)
        return gather_rows(hidden, layout.prev_index.to(hidden.device))

    # ------------------------------------------------------------------ stats
    @property
    def last_plan(self) -> PrefillPlan | None:
        """This thread's last pruned prefill, else the last one of any thread."""
        mine = self._slot.last_plan
        if mine is not None:
            return mine
        with self._stats_lock:
            return self._last_plan

    def stats_of(self, plan: PrefillPlan | None) -> PruneStats | None:
        """Token counts of a pruned prefill; computed once, when first read, so the prefill
        never waits on the host syncs that counting takes."""
        if plan is None:
            return None
        frozen_from = self.config.ssr_layer if self.ssr_mode == "freeze" else None
        return plan.cached_stats(len(self.layers), self.ssr_mode, frozen_from)

    @property
    def last_stats(self) -> PruneStats | None:
        """Token counts of :attr:`last_plan`."""
        return self.stats_of(self.last_plan)


def find_runtime(model: nn.Module) -> PruningRuntime | None:
    """The runtime whose hooks are installed on ``model`` (or on its copy), if any."""
    for module in model.modules():
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, _EntryEnter) and hook.runtime.model is model:
                return hook.runtime
    return None


# ---------------------------------------------------------------------- hooks
# Small callables holding the runtime: deep copies and pickles rebind them to the copy.


def _mask_2d(kwargs: dict[str, Any]) -> Tensor | None:
    mask = kwargs.get("attention_mask")
    return mask if isinstance(mask, Tensor) and mask.dim() == 2 else None


def _take_tapped(call: CallState) -> tuple[Tensor, Tensor] | None:
    q, k = call.tapped.get("q"), call.tapped.get("k")
    call.armed, call.tapped = None, {}
    if q is None or k is None or q.dim() != 3 or k.dim() != 3:
        return None
    return q, k


def _gather_labels_in_place(labels: Tensor, plan: PrefillPlan) -> None:
    """Gather ``labels`` ``[B, T]`` to the last stage's slots (dummies ignored), in place:
    the model's loss, computed after its decoder returns, reads the same tensor object."""
    last = plan.layouts[max(plan.layouts)]
    index = last.orig_pos.to(labels.device)
    gathered = labels.gather(1, index)
    gathered = gathered.masked_fill(~last.valid.to(labels.device), _IGNORE_INDEX)
    with torch.no_grad():
        labels.set_(gathered.contiguous())  # type: ignore[call-overload]  # Tensor overload


class _Hook:
    def __init__(self, runtime: PruningRuntime) -> None:
        self.runtime = runtime


# Inside torch.compile (a compiled decode step) the call hooks do nothing and the layer
# hooks take the traceable path: see PruningRuntime.compiled_decode_layer.


class _OuterEnter(_Hook):
    def __call__(self, _module: nn.Module, _args: Any, kwargs: dict[str, Any]) -> None:
        if not torch.compiler.is_compiling():
            self.runtime.open_outer(kwargs)


class _OuterExit(_Hook):
    def __call__(self, _module: nn.Module, _args: Any, _kwargs: Any, _output: Any) -> None:
        if not torch.compiler.is_compiling():
            self.runtime.close_outer()


class _EntryEnter(_Hook):
    def __call__(self, _module: nn.Module, args: Any, kwargs: dict[str, Any]) -> None:
        if not torch.compiler.is_compiling():
            self.runtime.open_entry(args, kwargs)


class _EntryExit(_Hook):
    def __call__(self, _module: nn.Module, _args: Any, _kwargs: Any, _output: Any) -> None:
        if not torch.compiler.is_compiling():
            self.runtime.close_entry()


class _LayerEnter(_Hook):
    def __init__(self, runtime: PruningRuntime, idx: int) -> None:
        super().__init__(runtime)
        self.idx = idx

    def __call__(
        self, _module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        if torch.compiler.is_compiling():
            return self.runtime.compiled_decode_layer(self.idx, args, kwargs)
        return self.runtime.layer_enter(self.idx, args, kwargs)


class _Tap(_Hook):
    def __init__(self, runtime: PruningRuntime, idx: int, name: str) -> None:
        super().__init__(runtime)
        self.idx, self.name = idx, name

    def __call__(self, _module: nn.Module, _inputs: Any, output: Any) -> None:
        if not torch.compiler.is_compiling():
            self.runtime.tap(self.idx, self.name, output)


class _FrozenForward(_Hook):
    """A frozen layer's instance ``forward``: the frozen path inside a pruned prefill,
    the layer's previous ``forward`` everywhere else."""

    def __init__(self, runtime: PruningRuntime, idx: int, original: Callable[..., Any]) -> None:
        super().__init__(runtime)
        self.idx, self.original = idx, original

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if torch.compiler.is_compiling():  # a decode step: frozen layers run as they are
            return self.original(*args, **kwargs)
        return self.runtime.frozen_forward(self.idx, self.original, args, kwargs)
