"""Contract check for the video frames an adapter reports (``video_budget`` modes).

An adapter of a video-capable family overrides :meth:`halfv.BackboneAdapter.video_frames`
so that ``PruningConfig.video_budget`` can budget a video as a whole or frame by frame.
:func:`check_video_budgets` runs a tiny model of the family on a prompt with videos under
both modes and checks what the runtime relies on::

    from halfv.testing.video import check_video_budgets

    def test_my_adapter_videos(tiny_model, video_prompt) -> None:
        check_video_budgets(tiny_model, video_prompt, frames_per_video=[2, 2])

* per video, each video is one ``"video"`` group holding all its frames; per frame, it is
  one ``"frame"`` group per frame, in order; images stay ``"image"`` groups either way;
* the groups of each sample hold all its visual tokens, in both modes, and each keeps
  ``max(1, floor(n * keep))`` of its ``n``;
* each pruned prefill equals the independent masked reference
  (:func:`halfv.testing.backbone.check_pruned_prefill`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from halfv.config import PruningConfig
from halfv.interfaces import BackboneAdapter
from halfv.ops.budget import kept_count
from halfv.runtime.plan import PruneStats
from halfv.testing.backbone import check_pruned_prefill

__all__ = ["check_video_budgets"]


def check_video_budgets(
    model: nn.Module,
    inputs: Mapping[str, Any],
    frames_per_video: Sequence[int],
    *,
    adapter: BackboneAdapter | None = None,
    config: PruningConfig | None = None,
    atol: float = 1e-4,
) -> dict[str, PruneStats]:
    """Both ``video_budget`` modes on one prompt; returns each mode's stats.

    Args:
        model: a tiny model of the family (eval mode).
        inputs: processor-style inputs with at least one video.
        frames_per_video: the frames (time steps the model embeds) of each video of the
            prompt, in prompt order, sample by sample.
        adapter: the adapter under test (default: the registered one).
        config: the schedule (default: IVR at layer 2 keeping half, SSR prune at
            layer 4 keeping a quarter; the model needs 5 layers or more).
        atol: tolerance of the comparison with the masked reference.
    """
    base = config or PruningConfig(
        ivr_layer=2, ivr_keep=0.5, ssr_layer=4, ssr_mode="prune", ssr_keep=0.25
    )
    out: dict[str, PruneStats] = {}
    for mode in ("per_video", "per_frame"):
        cfg = base.model_copy(update={"video_budget": mode})
        stats = check_pruned_prefill(model, inputs, cfg, adapter=adapter, atol=atol)
        groups = stats.budget_groups
        videos = [g for g in groups if g.kind != "image"]
        if mode == "per_video":
            got = [g.frames for g in videos]
            want = [(0, n) for n in frames_per_video]
        else:
            got = [g.frames for g in videos]
            want = [(f, 1) for n in frames_per_video for f in range(n)]
        if got != want or any(g.kind != mode.removeprefix("per_") for g in videos):
            msg = (
                f"{mode}: the video groups hold frames {got} "
                f"(kinds {[g.kind for g in videos]}); expected {want}"
            )
            raise AssertionError(msg)
        for b, visual in enumerate(stats.visual_tokens):
            held = sum(g.size for g in groups if g.sample == b)
            if held != visual:
                msg = f"{mode}: sample {b} has {visual} visual tokens, its groups hold {held}"
                raise AssertionError(msg)
        bad = [g for g in groups if g.ivr_keep != kept_count(g.size, cfg.ivr_keep)]
        if bad:
            msg = f"{mode}: groups {bad} do not keep max(1, floor(n * {cfg.ivr_keep}))"
            raise AssertionError(msg)
        out[mode] = stats
    return out
