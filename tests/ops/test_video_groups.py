"""halfv.ops.video: frames cut from runs of video tokens, and spans grouped into budgets."""

from __future__ import annotations

import pytest

from halfv.errors import HalfvValueError
from halfv.ops.video import (
    BudgetGroup,
    VideoBudget,
    VideoFrames,
    budget_groups,
    frames_from_grids,
)


def test_one_run_per_video_is_cut_into_frames() -> None:
    """Qwen2.5-VL / LLaVA-NeXT-Video: a video is one run of t * per tokens."""
    runs = [(0, 5, 12), (1, 2, 8)]
    got = frames_from_grids(runs, [(3, 4), (2, 4)])
    assert got == (
        VideoFrames(0, ((5, 4), (9, 4), (13, 4))),
        VideoFrames(1, ((2, 4), (6, 4))),
    )


def test_one_run_per_frame() -> None:
    """Qwen3-VL: every frame is its own run (a timestamp between frames)."""
    runs = [(0, 3, 4), (0, 10, 4), (0, 20, 4)]
    assert frames_from_grids(runs, [(2, 4), (1, 4)]) == (
        VideoFrames(0, ((3, 4), (10, 4))),
        VideoFrames(0, ((20, 4),)),
    )


def test_trailing_row_joins_the_last_frame() -> None:
    """LLaVA-OneVision: one newline row after the last frame."""
    assert frames_from_grids([(0, 0, 9)], [(2, 4)]) == (VideoFrames(0, ((0, 4), (4, 5))),)


def test_query_cut_shortens_the_last_frame() -> None:
    """A prompt ending on a video token: that token (the query) is not visual."""
    assert frames_from_grids([(0, 0, 7)], [(2, 4)]) == (VideoFrames(0, ((0, 4), (4, 3))),)


@pytest.mark.parametrize(
    ("runs", "videos", "why"),
    [
        ([(0, 0, 12)], [(2, 4)], "follow the last frame"),
        ([(0, 0, 6), (0, 9, 6)], [(3, 4)], "straddle"),
        ([(0, 0, 8), (1, 0, 8)], [(2, 4)], "belong to no video"),
        ([(0, 0, 4)], [(1, 4), (1, 4)], "has no video tokens"),
        ([(0, 0, 4), (1, 0, 4)], [(2, 4)], "ends after 1 of its 2 frames"),
    ],
)
def test_mismatches_are_refused(
    runs: list[tuple[int, int, int]], videos: list[tuple[int, int]], why: str
) -> None:
    with pytest.raises(HalfvValueError, match=why):
        frames_from_grids(runs, videos)


SPANS = (((2, 4), (10, 12)), ((0, 8),))  # sample 0: an image, a 3-frame video; sample 1: video
VIDEOS = (VideoFrames(0, ((10, 4), (14, 4), (18, 4))), VideoFrames(1, ((0, 4), (4, 4))))


def test_per_video_groups() -> None:
    assert budget_groups(SPANS, VIDEOS, "per_video") == (
        BudgetGroup(0, 2, 4, 4, "image"),
        BudgetGroup(0, 10, 12, 12, "video", 0, (0, 3)),
        BudgetGroup(1, 0, 8, 8, "video", 1, (0, 2)),
    )


def test_per_frame_groups() -> None:
    assert budget_groups(SPANS, VIDEOS, "per_frame") == (
        BudgetGroup(0, 2, 4, 4, "image"),
        BudgetGroup(0, 10, 4, 4, "frame", 0, (0, 1)),
        BudgetGroup(0, 14, 4, 4, "frame", 0, (1, 1)),
        BudgetGroup(0, 18, 4, 4, "frame", 0, (2, 1)),
        BudgetGroup(1, 0, 4, 4, "frame", 1, (0, 1)),
        BudgetGroup(1, 4, 4, 4, "frame", 1, (1, 1)),
    )


def test_without_videos_every_span_is_an_image() -> None:
    modes: tuple[VideoBudget, ...] = ("per_video", "per_frame")
    for mode in modes:
        groups = budget_groups(SPANS, (), mode)
        assert [(g.start, g.size, g.kind) for g in groups] == [
            (2, 4, "image"),
            (10, 12, "image"),
            (0, 8, "image"),
        ]


def test_frames_over_several_spans_form_one_video() -> None:
    """Qwen3-VL per_video: the group covers the text between the frames' spans."""
    spans = (((3, 4), (10, 4), (20, 2)),)
    video = VideoFrames(0, ((3, 4), (10, 4)))
    groups = budget_groups(spans, (video,), "per_video")
    assert groups == (
        BudgetGroup(0, 3, 11, 8, "video", 0, (0, 2)),
        BudgetGroup(0, 20, 2, 2, "image"),
    )
    per_frame = budget_groups(spans, (video,), "per_frame")
    assert [(g.start, g.size, g.frames) for g in per_frame][:2] == [(3, 4, (0, 1)), (10, 4, (1, 1))]


@pytest.mark.parametrize(
    ("spans", "video", "why"),
    [
        ((((0, 8),),), VideoFrames(0, ((0, 4),)), "cover 4 of them"),  # a span half video
        ((((0, 4),),), VideoFrames(0, ((2, 4),)), "outside every visual span"),
        ((((0, 4), (6, 2), (10, 4)),), VideoFrames(0, ((0, 4), (10, 4))), "between its frames"),
        ((((0, 4),),), VideoFrames(1, ((0, 4),)), "the batch has 1"),
    ],
)
def test_bad_layouts_are_refused(
    spans: tuple[tuple[tuple[int, int], ...], ...], video: VideoFrames, why: str
) -> None:
    with pytest.raises(HalfvValueError, match=why):
        budget_groups(spans, (video,), "per_video")


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(HalfvValueError, match="per_video"):
        budget_groups(SPANS, VIDEOS, "per_clip")  # type: ignore[arg-type]
