"""Model wiring: removable hooks that run a HalfV schedule inside a transformers model.

Nothing here swaps classes or edits weights. :class:`PruningRuntime` installs

* a pre-hook and an always-called post-hook on the model itself (the *outer* module,
  when it is not the entry module), which read ``logits_to_keep`` and ``labels``;
* the same pair on the adapter's *entry module* (the module that receives
  ``input_ids``), which decide what the call is (prefill, decode, pass-through);
* an instance-level ``forward`` on every decoder layer from the one before the IVR layer
  on (earlier layers see the whole prompt and carry nothing; no module hook, so each layer
  keeps ``nn.Module``'s fast call path), which scores, selects and gathers at the pruning
  layers and hands every later layer the stage's rotary tables, position ids and masks
  (gathered at the survivors' *original* positions), then calls the layer's previous
  ``forward``;
* forward hooks on the scoring layers' ``q_proj``/``k_proj`` (their outputs are the
  relevance inputs, :mod:`halfv.runtime.scoring`);
* for ``ssr_mode="freeze"``, the same ``forward`` of each frozen layer runs the frozen
  path (:mod:`halfv.runtime.freeze`) in a pruned prefill and the previous one elsewhere.

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
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from halfv._compat import cache_from_kwargs
from halfv.config import PruningConfig
from halfv.errors import HalfvTypeError
from halfv.interfaces import AttentionParts, BackboneAdapter, IVRPolicy, LayerSpec, SSRPolicy
from halfv.ops.cost import CostModel, Schedule
from halfv.runtime.caches import (
    check_cache,
    is_static_cache,
    size_static_layer,
)
from halfv.runtime.calls import SUPPORTED_ATTENTION, CallLifecycle
from halfv.runtime.decode import compiled_decode_layer, decode_layer
from halfv.runtime.distributed import check_tensor_parallel
from halfv.runtime.freeze import check_blocks, frozen_visual_forward
from halfv.runtime.gate import CostGate, dims_of
from halfv.runtime.hooks import (
    EntryEnter,
    EntryExit,
    LayerForward,
    OuterEnter,
    OuterExit,
    Tap,
    find_runtime,
)
from halfv.runtime.layer_kinds import check_layer_kinds
from halfv.runtime.plan import PrefillPlan, PruneStats, SkippedCall
from halfv.runtime.stage_inputs import hidden_of, stage_kwargs, with_hidden
from halfv.runtime.stages import (
    pending_score,
    prune,
    take_tapped,
)
from halfv.runtime.state import CallSlot, CallState, PlanStore
from halfv.runtime.token_inputs import AddTokenInputs, TakeTokenInputs

__all__ = ["SUPPORTED_ATTENTION", "PruningRuntime", "find_runtime"]

ResolvedSSR = Literal["prune", "freeze", "none"]


class PruningRuntime(CallLifecycle):
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
        cost_model: CostModel | None = None,
    ) -> None:
        self.model = model
        self.adapter = adapter
        self.config = config
        self.ivr_policy = ivr_policy
        self.ssr_policy = ssr_policy
        self.ssr_mode: ResolvedSSR = ssr_mode if config.ssr_layer is not None else "none"
        self.layers: Sequence[nn.Module] = adapter.decoder_layers(model)
        config.check_depth(len(self.layers))
        self.specs: list[LayerSpec] = adapter.layer_specs(model)
        if len(self.specs) != len(self.layers):
            msg = (
                f"adapter {adapter.name!r}: layer_specs() gave {len(self.specs)} specs for "
                f"{len(self.layers)} decoder layers; give one LayerSpec per layer"
            )
            raise HalfvTypeError(msg)
        #: linear-attention layers (:mod:`halfv.runtime.layer_kinds`): no attention parts
        self.linear = frozenset(i for i, spec in enumerate(self.specs) if spec.kind == "linear")
        self.parts: dict[int, AttentionParts] = {
            i: adapter.attention_parts(la)
            for i, la in enumerate(self.layers)
            if i not in self.linear
        }
        check_blocks(self.specs, self.parts, self.ssr_mode, config.ssr_layer)
        self.cache_index = [
            int(getattr(getattr(la, "self_attn", None), "layer_idx", i) or i)
            for i, la in enumerate(self.layers)
        ]
        self.final_norm = adapter.final_norm(model)
        self.visual_ids = adapter.visual_token_ids(model)
        self.joiner_ids = tuple(sorted(adapter.span_joiners(model)))
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
        check_layer_kinds(config, self.specs, self.scoring_layers)
        schedule = Schedule(
            config.ivr_layer,
            config.ssr_layer,
            self.ssr_mode,
            ivr_scores=ivr_policy.needs_scores,
            ivr_features=ivr_policy.needs_features,
            ssr_scores=ssr_policy.needs_scores,
        )
        #: decides per call which stages run (halfv.runtime.gate)
        self.gate = CostGate(config, schedule, dims_of(model), cost_model)
        check_tensor_parallel((i, self.parts[i]) for i in self.scoring_layers)
        self._handles: list[RemovableHandle] = []
        self._overrides: list[tuple[nn.Module, Any]] = []
        self._fresh_state()
        self.check_attention()

    def _fresh_state(self) -> None:
        self._slot = CallSlot()
        self._plans = PlanStore(self.plan_key)
        self._last_plan: PrefillPlan | None = None
        self._last_skip: SkippedCall | None = None
        self._stats_lock = threading.Lock()
        self._warned_embeds = False

    # ------------------------------------------------------------------ copies
    def __deepcopy__(self, memo: dict[int, Any]) -> PruningRuntime:
        """A runtime for the copied model: same schedule, hooks bound to the copy, no
        per-call state (plans of the original's caches stay with the original)."""
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        skip = {"_slot", "_plans", "_last_plan", "_last_skip", "_stats_lock"}
        for key, value in self.__dict__.items():
            if key not in skip:
                setattr(new, key, copy.deepcopy(value, memo))
        new._fresh_state()
        return new

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for key in ("_slot", "_plans", "_last_plan", "_last_skip", "_stats_lock"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._fresh_state()

    # ------------------------------------------------------------------ install
    def install(self) -> None:
        """Register every hook (handles call this once)."""
        if self.model is not self.entry:
            self._handles.append(
                self.model.register_forward_pre_hook(OuterEnter(self), with_kwargs=True)
            )
            self._handles.append(
                self.model.register_forward_hook(
                    OuterExit(self), with_kwargs=True, always_call=True
                )
            )
        self._handles.append(
            self.entry.register_forward_pre_hook(EntryEnter(self), with_kwargs=True)
        )
        self._handles.append(
            self.entry.register_forward_hook(EntryExit(self), with_kwargs=True, always_call=True)
        )
        for idx in self.scoring_layers:
            parts = self.parts[idx]
            for name, module in (("q", parts.q_proj), ("k", parts.k_proj)):
                self._handles.append(module.register_forward_hook(Tap(self, idx, name)))
        first = self.config.ivr_layer - 1  # the IVR scoring layer: nothing happens before it
        frozen_from = self.config.ssr_layer if self.ssr_mode == "freeze" else None
        for idx, layer in enumerate(self.layers):
            if idx < first:
                continue
            previous = layer.__dict__.get("forward")  # e.g. an accelerate device hook
            frozen = frozen_from is not None and idx >= frozen_from
            layer.forward = LayerForward(self, idx, layer.forward, frozen)
            self._overrides.append((layer, previous))
        self._install_token_inputs()

    def _install_token_inputs(self) -> None:
        """Hooks that gather the adapter's per-token inputs (:mod:`halfv.runtime.token_inputs`)."""
        spec = self.adapter.token_inputs(self.model)
        if spec is None:
            return
        take = TakeTokenInputs(self, spec)
        self._handles.append(spec.module.register_forward_pre_hook(take, with_kwargs=True))
        for idx in range(min(spec.max_layers, len(self.layers))):
            add = AddTokenInputs(self, idx)
            self._handles.append(self.layers[idx].register_forward_hook(add))

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

    # ------------------------------------------------------------------ layers
    def layer_enter(
        self, idx: int, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        call = self._slot.call
        if call is None or call.plan is None:
            return None
        if call.mode == "decode":
            if idx in self.linear:  # a linear layer's state has no positions to remap
                return None
            return decode_layer(
                idx,
                call,
                call.plan,
                args,
                kwargs,
                cache_idx=self.cache_index[idx],
                spec=self.specs[idx],
            )
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
            plan.scores = call.pending.scores(take_tapped(call))
            call.pending = None
        if idx == cfg.ivr_layer:
            hidden = prune(
                plan, idx, hidden, self.ivr_policy, stage="ivr", final_norm=self.final_norm
            )
        if plan.ssr_mode == "prune" and idx == cfg.ssr_layer:
            hidden = prune(
                plan, idx, hidden, self.ssr_policy, stage="ssr", final_norm=self.final_norm
            )
        stage = max((s for s in plan.layouts if 0 < s <= idx), default=0)
        if stage:
            kwargs = stage_kwargs(stage, plan, kwargs, linear=idx in self.linear)
            removed = plan.prompt_len - plan.layouts[stage].length
            if removed > 0 and call.static_cache:
                size_static_layer(call.cache, self.cache_index[idx], removed)
        if idx in self.scoring_layers and (idx + 1 == cfg.ivr_layer or plan.ssr_mode == "prune"):
            call.pending = pending_score(
                plan,
                idx,
                hidden,
                kwargs,
                self.parts[idx],
                rope=self.scoring_layers[idx],
                scale=self.config.relevance_scaling,
                rotary_fn=self.specs[idx].rotary,
                window=self.specs[idx].window if self.specs[idx].kind == "sliding" else None,
            )
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

    def compiled_decode_layer(
        self, idx: int, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        """A layer's decode step inside ``torch.compile`` (:mod:`halfv.runtime.decode`)."""
        if idx in self.linear:
            return None
        return compiled_decode_layer(
            self._plans, idx, args, kwargs, sliding=self.specs[idx].kind == "sliding"
        )

    def frozen_forward(
        self, idx: int, original: Callable[..., Any], args: tuple[Any, ...], kwargs: Any
    ) -> Any:
        call = self._slot.call
        if call is None or call.mode != "prefill" or call.plan is None:
            return original(*args, **kwargs)
        if call.plan.ssr_mode != "freeze":  # the gate skipped this call's SSR stage
            return original(*args, **kwargs)
        layout = call.plan.layout_at(idx)
        if layout is None:
            return original(*args, **kwargs)
        hidden = hidden_of(args, kwargs)
        grad = torch.is_grad_enabled() and hidden.requires_grad
        if call.record_outputs or grad or idx in self.linear:
            # The layer's own forward, then the visual rows put back: the same text rows
            # and cache, with the layer's attention weights reported (and autograd intact).
            # A linear-attention layer always takes this path: its recurrence reads every
            # row in order, so freezing keeps its visual rows but saves nothing there.
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
            rotary_fn=self.specs[idx].rotary,
        )

    # ------------------------------------------------------------------ stats
    @property
    def last_plan(self) -> PrefillPlan | None:
        """This thread's last pruned prefill, else the last one of any thread (``None``
        when that call's stages were all skipped by the gate)."""
        slot = self._slot
        if slot.last_plan is not None or slot.last_skip is not None:
            return slot.last_plan
        with self._stats_lock:
            return self._last_plan

    def stats_of(self, plan: PrefillPlan | None) -> PruneStats | None:
        """Token counts of a pruned prefill; computed once, when first read, so the prefill
        never waits on the host syncs that counting takes."""
        if plan is None:
            return None
        frozen_from = self.config.ssr_layer if plan.ssr_mode == "freeze" else None
        return plan.cached_stats(len(self.layers), plan.ssr_mode, frozen_from)

    @property
    def last_stats(self) -> PruneStats | None:
        """Token counts of the last prefill with visual tokens: :attr:`last_plan`, or the
        unpruned counts of a call whose stages the gate all skipped."""
        slot = self._slot
        if slot.last_plan is not None or slot.last_skip is not None:
            return slot.last_skip.stats if slot.last_skip else self.stats_of(slot.last_plan)
        with self._stats_lock:
            skipped, plan = self._last_skip, self._last_plan
        return skipped.stats if skipped else self.stats_of(plan)
