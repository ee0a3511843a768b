"""The per-prefill pruning plan: spans, budgets, stage layouts, selection and statistics.

A :class:`PrefillPlan` is created when a prefill with visual tokens starts, filled in as
the decoder reaches each pruning layer, and kept (keyed by the KV cache object) for the
decode steps that follow. It holds only tensors and ints: no model references.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch
from torch import Tensor

from halfv.interfaces import IVRPolicy, SSRPolicy
from halfv.ops.budget import kept_count
from halfv.ops.spans import VisualSpans
from halfv.ops.video import BudgetGroup
from halfv.runtime.gate import GateReport
from halfv.runtime.layout import StageLayout, initial_layout

__all__ = [
    "LayerStats",
    "PrefillPlan",
    "PruneStats",
    "SkippedCall",
    "SpanBudget",
    "select_per_span",
    "unpruned_stats",
]


@dataclass(frozen=True)
class SpanBudget:
    """One visual span and what it keeps at each stage.

    ``length`` counts the span's visual tokens; ``extent`` the positions it covers when
    span joiners sit inside it (``None``: the same as ``length``).
    """

    sample: int
    start: int
    length: int
    ivr_keep: int
    ssr_keep: int
    extent: int | None = None


@dataclass(frozen=True)
class LayerStats:
    """Token counts one decoder layer saw during the last prefill.

    Attributes:
        layer: decoder layer index.
        sequence: rows per sample that went through the layer's projections (``[B]``).
        visual: visual tokens per sample present at the layer.
        query_rows: rows per sample whose queries/MLP were computed (text only if frozen).
        frozen: whether visual tokens were frozen at this layer.
    """

    layer: int
    sequence: tuple[int, ...]
    visual: tuple[int, ...]
    query_rows: tuple[int, ...]
    frozen: bool


@dataclass(frozen=True)
class PruneStats:
    """What halfv did during the last prefill it served.

    Attributes:
        prompt_tokens: prompt length per sample (padding included).
        visual_tokens: original visual tokens per sample.
        spans: visual spans per sample ``(start, length)``.
        layers: per-layer token counts.
        ssr_mode: the SSR action that was applied.
        kept_positions: for each pruning layer, the original prompt positions every sample
            keeps from that layer on (text and visual, increasing).
        budget_groups: the visual tokens that shared one budget (an image, a video, or a
            frame of one: ``PruningConfig.video_budget``), with what each kept.
        span_sizes: visual tokens per span, per sample (smaller than the span's length
            where span joiners sit inside it; budgets are shares of these).
        gate: what the cost gate decided: per stage, whether it ran and its predicted
            gain (:class:`halfv.runtime.gate.GateReport`); ``None`` for stats built by hand.
    """

    prompt_tokens: tuple[int, ...]
    visual_tokens: tuple[int, ...]
    spans: tuple[tuple[tuple[int, int], ...], ...]
    layers: tuple[LayerStats, ...]
    ssr_mode: str
    kept_positions: dict[int, tuple[tuple[int, ...], ...]]
    budget_groups: tuple[BudgetGroup, ...] = ()
    span_sizes: tuple[tuple[int, ...], ...] = ()
    gate: GateReport | None = None

    def kept_visual_per_layer(self, sample: int = 0) -> list[int]:
        """Visual tokens present at each layer for one sample."""
        return [layer.visual[sample] for layer in self.layers]


@dataclass
class PrefillPlan:
    """Mutable state of one pruned prefill (and the decode steps after it)."""

    spans: VisualSpans
    budgets: tuple[SpanBudget, ...]
    prompt_len: int
    query_pos: Tensor  # [B] original position of each sample's last real token
    span_id: Tensor  # [B, T] global span index of visual positions, -1 elsewhere
    layouts: dict[int, StageLayout] = field(default_factory=dict)  # stage start -> layout
    scores: Tensor | None = None  # pending relevance for the next stage
    #: per-stage inputs built once per prefill (gathered layer kwargs, frozen-layer inputs)
    stage_kwargs: dict[tuple[Any, ...], Any] = field(default_factory=dict)
    stage_of: tuple[int, ...] = ()  # per decoder layer: its stage start (0: unpruned)
    moved: dict[tuple[int, torch.device], StageLayout] = field(default_factory=dict)
    decode_steps: int = 0  # decode steps served from this prefill's cache
    prompt_keys: Tensor | None = None  # [B, T] bool: False on the prompt's padding
    stats: PruneStats | None = None  # counted once, when first read
    groups: tuple[BudgetGroup, ...] = ()  # the budget groups (one per budget, in order)
    ssr_mode: str = "none"  # the SSR action of this call (the gate may skip the stage)
    gate: GateReport | None = None  # the cost gate's decision for this call

    @classmethod
    def build(
        cls,
        spans: VisualSpans,
        attention_mask: Tensor | None,
        ivr_keep: float,
        ssr_keep: float,
        *,
        query_pos: Tensor | None = None,
    ) -> PrefillPlan:
        """Budgets per span and the query position of every sample.

        ``query_pos`` (``[B]``) defaults to each sample's last real token.
        """
        b, t = spans.mask.shape
        budgets = tuple(
            SpanBudget(
                sample,
                start,
                size,
                kept_count(size, ivr_keep),
                kept_count(size, ssr_keep),
                extent=None if size == n else n,
            )
            for sample, (sample_spans, sizes) in enumerate(
                zip(spans.spans, spans.span_sizes, strict=True)
            )
            for (start, n), size in zip(sample_spans, sizes, strict=True)
        )
        device = spans.mask.device
        if query_pos is not None:
            query_pos = query_pos.to(device)
        elif attention_mask is None:
            query_pos = torch.full((b,), t - 1, device=device, dtype=torch.long)
        else:
            positions = torch.arange(t, device=device).expand(b, t)
            query_pos = torch.where(attention_mask.to(device).bool(), positions, -1).amax(dim=1)
        span_id = torch.full((b, t), -1, dtype=torch.long, device=device)
        for g, budget in enumerate(budgets):  # fill_: no host tensor to copy over
            span_id[budget.sample].narrow(0, budget.start, budget.extent or budget.length).fill_(g)
        if spans.sizes is not None:  # joined spans: their joiners are not visual
            span_id.masked_fill_(~spans.mask, -1)
        layouts = {0: initial_layout(spans.mask, real_visual=sum(g.length for g in budgets))}
        keys = None if attention_mask is None else attention_mask.to(device).bool()
        return cls(spans, budgets, t, query_pos, span_id, layouts, prompt_keys=keys)

    def alive_counts(self, stage: Literal["ivr", "ssr"]) -> tuple[list[int], list[int]]:
        """Tokens and visual tokens per sample after a stage's prune.

        Known on the host from the budgets: every non-visual position of the prompt
        (padding included) plus the visual tokens each span keeps.
        """
        b, t = self.spans.mask.shape
        counts, visual = [t] * b, [0] * b
        for g in self.budgets:
            kept = g.ivr_keep if stage == "ivr" else g.ssr_keep
            counts[g.sample] += kept - g.length
            visual[g.sample] += kept
        return counts, visual

    @property
    def would_shorten(self) -> bool:
        """Whether some span keeps fewer tokens than it has (known before any prune)."""
        return any(g.ivr_keep < g.length or g.ssr_keep < g.length for g in self.budgets)

    @property
    def shortens_cache(self) -> bool:
        """Whether some stage holds fewer slots than the prompt (its layers' KV caches are
        then shorter than the unpruned layers'); False at a keep ratio of 1.0."""
        return any(layout.length < self.prompt_len for layout in self.layouts.values())

    # ------------------------------------------------------------------ stage lookup
    def layout_at(self, layer: int) -> StageLayout | None:
        """Layout of the stage that ``layer`` belongs to (``None`` before any prune)."""
        starts = [s for s in self.layouts if 0 < s <= layer]
        return self.layouts[max(starts)] if starts else None

    def stage_table(self, num_layers: int) -> tuple[int, ...]:
        """Stage start of every decoder layer (0 before the first prune)."""
        starts = sorted(s for s in self.layouts if s > 0)
        return tuple(max((s for s in starts if s <= i), default=0) for i in range(num_layers))

    def layout_on(self, stage: int, device: torch.device) -> StageLayout:
        """A stage's layout on ``device``, copied there once and then kept."""
        layout = self.layouts[stage]
        if layout.orig_pos.device == device:
            return layout
        key = (stage, device)
        if key not in self.moved:
            self.moved[key] = layout.to(device)
        return self.moved[key]

    def current_layout(self, layer: int) -> StageLayout:
        """Like :meth:`layout_at` but the identity layout before the first prune."""
        layout = self.layout_at(layer)
        return layout if layout is not None else self.layouts[0]

    # ------------------------------------------------------------------ selection
    def visual_rows(self, layout: StageLayout) -> tuple[Tensor, Tensor]:
        """Flat row indices ``b*S+slot`` of a stage's visual slots (built once per layout,
        :attr:`StageLayout.visual_rows`) and their span ids."""
        rows = layout.visual_rows
        b_idx, slot = rows // layout.length, rows % layout.length
        return rows, self.span_id[b_idx, layout.orig_pos[b_idx, slot]]

    def query_rows(self, layout: StageLayout) -> Tensor:
        """Flat row index of each sample's query token in a stage."""
        slot = (layout.orig_pos == self.query_pos[:, None]).to(torch.int8).argmax(dim=1)
        return torch.arange(layout.orig_pos.shape[0], device=slot.device) * layout.length + slot

    # ------------------------------------------------------------------ statistics
    def cached_stats(self, num_layers: int, ssr_mode: str, frozen_from: int | None) -> PruneStats:
        """:meth:`prune_stats`, computed on the first call and kept."""
        if self.stats is None:
            self.stats = self.prune_stats(num_layers, ssr_mode, frozen_from)
        return self.stats

    def prune_stats(self, num_layers: int, ssr_mode: str, frozen_from: int | None) -> PruneStats:
        """Token counts of the finished prefill (host syncs: a few per stage, once).

        Args:
            num_layers: decoder layers of the model.
            ssr_mode: the SSR action that was applied.
            frozen_from: first frozen layer (SSR ``freeze``), else ``None``.
        """
        b, t = self.spans.mask.shape
        visual0 = self.spans.mask.sum(dim=1).tolist()
        per_stage: dict[int, tuple[list[int], list[int]]] = {}
        for start, layout in self.layouts.items():
            real = layout.valid
            per_stage[start] = (real.sum(1).tolist(), (real & layout.visual).sum(1).tolist())
        stage_of = self.stage_table(num_layers)
        layers = []
        for idx in range(num_layers):
            stage = stage_of[idx]
            seq, vis = per_stage[stage] if stage else ([t] * b, visual0)
            frozen = frozen_from is not None and idx >= frozen_from
            query = [n - v for n, v in zip(seq, vis, strict=True)] if frozen else seq
            layers.append(LayerStats(idx, tuple(seq), tuple(vis), tuple(query), frozen))
        return PruneStats(
            prompt_tokens=(t,) * b,
            visual_tokens=tuple(visual0),
            spans=self.spans.spans,
            layers=tuple(layers),
            ssr_mode=ssr_mode,
            kept_positions={
                start: tuple(
                    tuple(pos[ok].tolist())
                    for pos, ok in zip(layout.orig_pos.cpu(), layout.valid.cpu(), strict=True)
                )
                for start, layout in sorted(self.layouts.items())
                if start > 0
            },
            budget_groups=tuple(
                replace(group, ivr_keep=budget.ivr_keep, ssr_keep=budget.ssr_keep)
                for group, budget in zip(self.groups, self.budgets, strict=True)
            )
            if self.groups
            else (),
            span_sizes=self.spans.span_sizes,
            gate=self.gate,
        )


@dataclass
class SkippedCall:
    """A prefill the gate ran unpruned: what its stats need, counted only when read (the
    call itself pays for nothing but this record)."""

    spans: tuple[tuple[tuple[int, int], ...], ...]
    span_sizes: tuple[tuple[int, ...], ...]  # visual tokens per span (joiners excluded)
    batch: int
    prompt_len: int
    num_layers: int
    gate: GateReport | None = None
    groups: tuple[BudgetGroup, ...] = ()  # the budget groups the call would have used
    _stats: PruneStats | None = None

    @property
    def stats(self) -> PruneStats:
        """The unpruned token counts of the call (built on first read)."""
        if self._stats is None:
            self._stats = unpruned_stats(self)
        return self._stats


def unpruned_stats(call: SkippedCall) -> PruneStats:
    """Stats of a prefill that ran unpruned: host-known counts, no device read; every
    budget group keeps all of its tokens."""
    b, t = call.batch, call.prompt_len
    visual = tuple(sum(sizes) for sizes in call.span_sizes)
    layers = tuple(
        LayerStats(idx, (t,) * b, visual, (t,) * b, False) for idx in range(call.num_layers)
    )
    groups = tuple(replace(g, ivr_keep=g.size, ssr_keep=g.size) for g in call.groups)
    return PruneStats(
        (t,) * b, visual, call.spans, layers, "none", {},
        budget_groups=groups, span_sizes=call.span_sizes, gate=call.gate,
    )  # fmt: skip


def select_per_span(
    policy: IVRPolicy | SSRPolicy,
    scores: Tensor | None,
    features: Tensor | None,
    sizes: Sequence[int],
    keeps: Sequence[int],
    *,
    device: torch.device,
) -> Tensor:
    """Flat indices (into the stage's visual rows) chosen for every span.

    Spans of equal (size, keep) form one batched ``select`` call. ``device`` is where the
    indices are built when the policy reads neither scores nor features.
    """
    offsets = [0]
    for n in sizes:
        offsets.append(offsets[-1] + n)
    if scores is not None:
        device = scores.device
    elif features is not None:
        device = features.device
    groups: dict[tuple[int, int], list[int]] = {}
    for g, (n, k) in enumerate(zip(sizes, keeps, strict=True)):
        groups.setdefault((n, k), []).append(g)
    chosen: list[Tensor] = []
    for (n, k), members in groups.items():
        first = offsets[members[0]]
        back_to_back = all(offsets[g] == first + i * n for i, g in enumerate(members))
        if back_to_back:
            index = torch.arange(first, first + n * len(members), device=device).view(-1, n)
        else:  # a non-blocking copy of a few ints: no wait for the device
            starts = torch.tensor([offsets[g] for g in members]).to(device, non_blocking=True)
            index = starts[:, None] + torch.arange(n, device=device)
        rows = slice(first, first + n * len(members)) if back_to_back else None
        group_scores = (
            torch.zeros(index.shape, device=index.device)
            if scores is None
            else _rows_of(scores, index, rows)
        )
        group_features = None if features is None else _rows_of(features, index, rows)
        local = policy.select(group_scores, group_features, k)
        chosen.append(index.gather(1, local.to(index.device)).reshape(-1))
    return torch.cat(chosen)


def _rows_of(values: Tensor, index: Tensor, rows: slice | None) -> Tensor:
    """``values[index]`` on ``index``'s device; a view when the rows are one slice."""
    if rows is not None and values.device == index.device:
        return values[rows].view(*index.shape, *values.shape[1:])
    return values[index.to(values.device)].to(index.device)
