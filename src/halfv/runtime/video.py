"""Budget groups of one prefill: the adapter's video frames, grouped by the config's mode.

Model wiring around :func:`halfv.ops.video.budget_groups`: the adapter says where each
video's frames are (:meth:`halfv.BackboneAdapter.video_frames`), the groups replace the
prefill's spans (every group is budgeted, scored and selected as one span), and the plan
keeps them for ``handle.stats.budget_groups``. A video whose frames are separate spans
(Qwen3-VL: a timestamp before each frame) is one joined span per video, its text not
visual (as span joiners are, :mod:`halfv.ops.spans`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from halfv.interfaces import BackboneAdapter
from halfv.ops.spans import VisualSpans
from halfv.ops.video import BudgetGroup, VideoBudget, budget_groups

__all__ = ["group_spans"]


def group_spans(
    adapter: BackboneAdapter,
    model: nn.Module,
    spans: VisualSpans,
    input_ids: Any,
    kwargs: Mapping[str, Any],
    *,
    mode: VideoBudget,
) -> tuple[VisualSpans, tuple[BudgetGroup, ...]]:
    """The prefill's budget groups, as spans, and as the groups ``handle.stats`` reports."""
    inputs = dict(kwargs)
    if isinstance(input_ids, Tensor):
        inputs["input_ids"] = input_ids
    videos = adapter.video_frames(model, spans, inputs)
    groups = budget_groups(spans.spans, videos, mode, sizes=spans.sizes)
    if not videos:
        return spans, groups
    per_sample: list[list[tuple[int, int]]] = [[] for _ in spans.spans]
    sizes: list[list[int]] = [[] for _ in spans.spans]
    for group in groups:
        per_sample[group.sample].append((group.start, group.length))
        sizes[group.sample].append(group.size)
    joined = any(g.size != g.length for g in groups)  # text between a video's frames
    return (
        VisualSpans(
            mask=spans.mask,
            spans=tuple(tuple(s) for s in per_sample),
            sizes=tuple(tuple(s) for s in sizes) if joined else None,
        ),
        groups,
    )
