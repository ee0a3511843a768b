"""Model wiring: removable hooks that run a HalfV schedule inside a transformers model.

Nothing here swaps classes or edits weights. :class:`PruningRuntime` installs

* a pre-hook and an always-called post-hook on the adapter's *entry module* (the module
  that receives ``input_ids``), which open and close a per-call state;
* a kwargs pre-hook on every decoder layer from the one before the IVR layer on (earlier
  layers see the whole prompt and need nothing), which scores, selects and gathers at the
  pruning layers and hands every later layer the stage's rotary tables, position ids and
  masks (gathered at the survivors' *original* positions);
* for ``ssr_mode="freeze"``, an instance-level ``forward`` on each frozen layer that falls
  back to the original forward outside a pruned prefill.

Prefills are pruned only when the KV cache is empty. The plan of a pruned prefill is kept
per cache object, so decode steps (``generate`` or a manual loop) remap the masks that
transformers builds for layer 0's full-length cache onto each pruned layer's cache.

Decode is launch-bound, so its path is kept lean: each stage's mask is remapped once per
step (not per layer) from a per-layer stage table built after the prefill, with no host
synchronisation; layers whose kwargs need no change (unpruned layers, or SDPA without a
mask and without dummy slots) return at once.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from halfv._compat import cache_from_kwargs, check_dynamic_cache
from halfv.config import PruningConfig
from halfv.devices import module_device
from halfv.errors import UnsupportedModelError
from halfv.freeze import frozen_visual_forward
from halfv.interfaces import AttentionParts, BackboneAdapter, IVRPolicy, SSRPolicy
from halfv.plan import PrefillPlan, PruneStats, select_per_span
from halfv.scoring import PendingScore, ProjectionTap
from halfv.sdpa_backends import decode_backends_without_cudnn
from halfv.spans import find_visual_spans
from halfv.stage_inputs import hidden_of, stage_kwargs, with_hidden
from halfv.surgery import StageLayout, gather_rows, next_layout, remap_decode_mask

__all__ = ["SUPPORTED_ATTENTION", "PruningRuntime"]

SUPPORTED_ATTENTION = ("sdpa", "eager")
ResolvedSSR = Literal["prune", "freeze", "none"]


@dataclass
class _Call:
    mode: Literal["pass", "prefill", "decode"] = "pass"
    plan: PrefillPlan | None = None
    cache: Any = None
    decode_masks: dict[tuple[int, int], Tensor | None] = field(default_factory=dict)
    #: decode only: the mask objects behind ``decode_masks``' ids, kept alive for the step
    seen_masks: list[Any] = field(default_factory=list)
    #: prefill only: a scoring layer whose projections are being tapped
    pending: PendingScore | None = None
    #: decode only: the SDPA backend context entered for this step (halfv.sdpa_backends)
    backends: AbstractContextManager[None] | None = None


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
        #: run pruned decode steps without cuDNN attention (see halfv.sdpa_backends)
        self.decode_without_cudnn = True
        self._stats_plan: PrefillPlan | None = None
        self._stats: PruneStats | None = None
        self.decode_steps = 0
        self._call: _Call | None = None
        self._plans: weakref.WeakKeyDictionary[Any, PrefillPlan] = weakref.WeakKeyDictionary()
        self._handles: list[RemovableHandle] = []
        self.tap = ProjectionTap()
        self.scoring_layers = self._scoring_layers()
        self._overrides: list[tuple[nn.Module, Any]] = []
        self.check_attention()

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
        """Register every hook (idempotent is not needed: handles call this once)."""
        self._handles.append(self.entry.register_forward_pre_hook(self._on_entry, with_kwargs=True))
        self._handles.append(
            self.entry.register_forward_hook(self._on_exit, with_kwargs=True, always_call=True)
        )
        self._handles += self.tap.install({i: self.parts[i] for i in self.scoring_layers})
        first = self.config.ivr_layer - 1  # the IVR scoring layer: nothing happens before it
        for idx, layer in enumerate(self.layers):
            if idx >= first:
                hook = self._layer_hook(idx)
                self._handles.append(layer.register_forward_pre_hook(hook, with_kwargs=True))
            if self.ssr_mode == "freeze" and idx >= (self.config.ssr_layer or 0):
                self._override_forward(idx, layer)

    def remove(self) -> None:
        """Remove every hook and restore every overridden ``forward``."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for layer, previous in reversed(self._overrides):
            if previous is None:
                del layer.forward
            else:
                layer.forward = previous
        self._overrides.clear()
        self._call = None

    def _override_forward(self, idx: int, layer: nn.Module) -> None:
        previous = layer.__dict__.get("forward")  # e.g. an accelerate device hook
        original: Callable[..., Any] = layer.forward

        def forward(*args: Any, **kwargs: Any) -> Any:
            call = self._call
            if call is None or call.mode != "prefill" or call.plan is None:
                return original(*args, **kwargs)
            layout = call.plan.layout_at(idx)
            if layout is None:
                return original(*args, **kwargs)
            return frozen_visual_forward(
                self.parts[idx],
                hidden_of(args, kwargs),
                position_embeddings=kwargs["position_embeddings"],
                stage_mask=kwargs.get("attention_mask"),
                layout=layout,
                cache=cache_from_kwargs(kwargs),
                layer_idx=self.cache_index[idx],
            )

        layer.forward = forward
        self._overrides.append((layer, previous))

    # ------------------------------------------------------------------ call state
    def _on_entry(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        call = _Call()
        self._call = call
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        if not self.enabled or not isinstance(input_ids, Tensor) or input_ids.dim() != 2:
            return
        cache = cache_from_kwargs(kwargs)
        cached = cache.get_seq_length() if cache is not None else 0
        if cached > 0:
            plan = self._plans.get(cache)
            if plan is not None:
                call.mode, call.plan, call.cache = "decode", plan, cache
                if self.decode_without_cudnn and plan.shortens_cache:
                    call.backends = decode_backends_without_cudnn(input_ids.device)
                    if call.backends is not None:
                        call.backends.__enter__()
            return
        spans = find_visual_spans(input_ids, self.visual_ids)
        if not spans.any:
            return  # text-only prompts pass through untouched
        self.check_attention()
        mask = kwargs.get("attention_mask")
        mask2d = mask if isinstance(mask, Tensor) and mask.dim() == 2 else None
        call.mode = "prefill"
        call.plan = PrefillPlan.build(spans, mask2d, self.config.ivr_keep, self.config.ssr_keep)

    def _on_exit(
        self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any
    ) -> None:
        call, self._call = self._call, None
        self.tap.take()  # disarm; drop any tapped outputs
        if call is not None and call.backends is not None:
            call.backends.__exit__(None, None, None)
        if call is None or call.plan is None:
            return
        if call.mode == "decode":
            self.decode_steps += 1
            return
        call.plan.stage_kwargs.clear()
        call.plan.scores = None
        if self.config.ivr_layer in call.plan.layouts:  # the prune happened
            call.plan.stage_of = call.plan.stage_table(len(self.layers))
            self._stats_plan, self._stats = call.plan, None  # counted when first read
            self.decode_steps = 0
            if call.cache is not None:
                self._plans[call.cache] = call.plan

    # ------------------------------------------------------------------ layers
    def _layer_hook(self, idx: int) -> Callable[[nn.Module, tuple[Any, ...], dict[str, Any]], Any]:
        def hook(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            call = self._call
            if call is None or call.plan is None:
                return None
            if call.mode == "decode":
                return self._decode_layer(idx, call, call.plan, args, kwargs)
            return self._prefill_layer(idx, call, call.plan, args, kwargs)

        return hook

    def _prefill_layer(
        self,
        idx: int,
        call: _Call,
        plan: PrefillPlan,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        cfg = self.config
        if call.cache is None:
            call.cache = cache_from_kwargs(kwargs)
            check_dynamic_cache(call.cache)
        hidden = hidden_of(args, kwargs)
        if call.pending is not None:  # the scoring layer ran: its projections are tapped
            plan.scores = call.pending.scores(self.tap.take())
            call.pending = None
        if idx == cfg.ivr_layer:
            hidden = self._transition(idx, plan, hidden, self.ivr_policy, stage="ivr")
        if self.ssr_mode == "prune" and idx == cfg.ssr_layer:
            hidden = self._transition(idx, plan, hidden, self.ssr_policy, stage="ssr")
        stage = max((s for s in plan.layouts if 0 < s <= idx), default=0)
        if stage:
            kwargs = stage_kwargs(stage, plan, kwargs)
        if idx in self.scoring_layers:
            call.pending = self._pending_score(idx, plan, hidden, kwargs)
            self.tap.arm(idx)
        return with_hidden(hidden, args, kwargs)

    def _scoring_layers(self) -> dict[int, bool]:
        """``{layer: rope}`` of the layers whose relevance a later prune reads."""
        cfg, layers = self.config, {}
        if self.ivr_policy.needs_scores:
            layers[cfg.ivr_layer - 1] = False
        if self.ssr_mode == "prune" and self.ssr_policy.needs_scores:
            layers[(cfg.ssr_layer or 0) - 1] = True
        return layers

    def _decode_layer(
        self,
        idx: int,
        call: _Call,
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

    @staticmethod
    def _decode_mask(
        stage: int, call: _Call, plan: PrefillPlan, mask: Any, hidden: Tensor
    ) -> Tensor | None:
        device = mask.device if isinstance(mask, Tensor) else hidden.device
        return remap_decode_mask(
            mask,
            plan.layout_on(stage, device),
            plan.prompt_len,
            hidden.shape[1],
            int(call.cache.get_seq_length()),
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
            hidden=hidden,
            query_rows=plan.query_rows(layout),
            visual_rows=rows,
            segment=segment,
            num_segments=len(plan.budgets),
            parts=self.parts[idx],
            rotary=rotary,
            scale=self.config.relevance_scaling,
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
            flat = hidden.reshape(b * s, d)[rows.to(hidden.device)]
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
    def last_stats(self) -> PruneStats | None:
        """Token counts of the last pruned prefill; read lazily, so the prefill never waits
        on the host syncs that counting takes."""
        if self._stats is None and self._stats_plan is not None:
            frozen_from = self.config.ssr_layer if self.ssr_mode == "freeze" else None
            plan = self._stats_plan
            self._stats = plan.prune_stats(len(self.layers), self.ssr_mode, frozen_from)
        return self._stats
