"""Where a prompt's video frames are, for the adapters of video-capable families.

Model wiring around :mod:`halfv.ops.video`: read the runs of video tokens from the call's
``input_ids`` (one host read, only for calls that carry videos) and each video's frame
count and frame size from the processor's outputs, then cut the runs into frames with
:func:`halfv.ops.video.frames_from_grids`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from halfv.errors import HalfvValueError
from halfv.ops.spans import VisualSpans
from halfv.ops.video import VideoFrames, frames_from_grids

__all__ = [
    "CountedVideoFrames",
    "GridVideoFrames",
    "counted_video_frames",
    "grid_video_frames",
    "video_runs",
]


def video_runs(
    spans: VisualSpans, input_ids: Tensor, video_token_ids: Sequence[int]
) -> list[tuple[int, int, int]]:
    """``(sample, start, length)`` of the spans that are video tokens, in prompt order.

    A span is a video run when its first token is one of ``video_token_ids`` (the
    processors never put an image and a video in one run). One host read of the spans'
    first tokens.
    """
    flat = [(b, s, n) for b, sample in enumerate(spans.spans) for s, n in sample]
    if not flat:
        return []
    rows = torch.tensor([b for b, _, _ in flat])
    cols = torch.tensor([s for _, s, _ in flat])
    first = input_ids[rows.to(input_ids.device), cols.to(input_ids.device)].tolist()
    ids = set(video_token_ids)
    return [run for run, token in zip(flat, first, strict=True) if token in ids]


def grid_video_frames(
    spans: VisualSpans,
    inputs: Mapping[str, Any],
    *,
    video_token_ids: Sequence[int],
    merge_size: int,
) -> tuple[VideoFrames, ...]:
    """Frames of the Qwen-VL families: ``video_grid_thw`` row ``(t, h, w)`` is a video of
    ``t`` frames (temporal patches) of ``h * w / merge_size**2`` tokens each, rows in
    prompt order, sample by sample (as ``get_rope_index`` reads them)."""
    grids = inputs.get("video_grid_thw")
    input_ids = inputs.get("input_ids")
    if not isinstance(grids, Tensor) or not isinstance(input_ids, Tensor) or grids.numel() == 0:
        return ()
    if grids.dim() != 2 or grids.shape[1] != 3:
        msg = f"video_grid_thw must have shape [videos, 3], got {tuple(grids.shape)}"
        raise HalfvValueError(msg)
    videos = [(t, h * w // merge_size**2) for t, h, w in grids.tolist()]
    return frames_from_grids(video_runs(spans, input_ids, video_token_ids), videos)


def counted_video_frames(
    spans: VisualSpans, inputs: Mapping[str, Any], *, video_token_ids: Sequence[int]
) -> tuple[VideoFrames, ...]:
    """Frames of the LLaVA video families: ``pixel_values_videos`` is
    ``[videos, frames, C, H, W]`` and each video one run of ``frames`` pooled frames of
    equal size, in prompt order (LLaVA-OneVision adds one newline row at the end, which
    joins the last frame)."""
    pixels = inputs.get("pixel_values_videos")
    input_ids = inputs.get("input_ids")
    if not isinstance(pixels, Tensor) or not isinstance(input_ids, Tensor) or pixels.dim() != 5:
        return ()
    frames = int(pixels.shape[1])
    runs = video_runs(spans, input_ids, video_token_ids)
    if len(runs) != pixels.shape[0]:
        msg = (
            f"the prompt has {len(runs)} run(s) of video tokens, pixel_values_videos "
            f"{int(pixels.shape[0])} video(s); pass the processor's video inputs unchanged"
        )
        raise HalfvValueError(msg)
    return frames_from_grids(runs, [(frames, max(1, n // frames)) for _, _, n in runs])


class GridVideoFrames:
    """Adapter mixin (list it before the adapter base): :meth:`video_frames` of the
    Qwen-VL families, from ``video_grid_thw``, ``config.video_token_id`` and
    ``config.vision_config.spatial_merge_size``."""

    def video_frames(
        self, model: nn.Module, spans: VisualSpans, inputs: Mapping[str, Any]
    ) -> tuple[VideoFrames, ...]:
        """Each ``video_grid_thw`` row ``(t, h, w)``: ``t`` frames of ``h * w / merge**2``
        video tokens, in one run (Qwen2-VL, Qwen2.5-VL) or one run each (Qwen3-VL)."""
        config: Any = model.config
        return grid_video_frames(
            spans,
            inputs,
            video_token_ids=(int(config.video_token_id),),
            merge_size=int(config.vision_config.spatial_merge_size),
        )


class CountedVideoFrames:
    """Adapter mixin (list it before the adapter base): :meth:`video_frames` of the
    LLaVA video families, from ``pixel_values_videos`` and ``config.video_token_id``."""

    def video_frames(
        self, model: nn.Module, spans: VisualSpans, inputs: Mapping[str, Any]
    ) -> tuple[VideoFrames, ...]:
        """Each ``<video>`` run cut into the ``pixel_values_videos`` frames."""
        config: Any = model.config
        return counted_video_frames(spans, inputs, video_token_ids=(int(config.video_token_id),))
