"""Budget groups: which visual tokens share one budget (pure maths, no model).

halfv gives every *budget group* its own budget (``max(1, floor(n * keep))`` of its ``n``
visual tokens), its own relevance softmax and its own selection. An image is one group:
its visual span (:mod:`halfv.ops.spans`). A video depends on the policy option
``PruningConfig.video_budget``:

* ``"per_video"``: all frames of a video share one budget, so a static scene can give
  its tokens to the frames that move. The group covers every span of the video (Qwen3-VL
  writes each frame as its own span, with a timestamp between frames; the text between
  them is not visual and never pruned).
* ``"per_frame"``: every frame keeps the same share, so no moment of the clip is lost.

The adapter says where each video's frames are (:class:`VideoFrames`, from
:meth:`halfv.BackboneAdapter.video_frames`); :func:`frames_from_grids` turns the runs of
video tokens and each video's frame count and frame size into frames, and
:func:`budget_groups` groups the spans. Host-side ints only: no device work.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from halfv.errors import HalfvValueError

__all__ = [
    "BudgetGroup",
    "VideoBudget",
    "VideoFrames",
    "budget_groups",
    "frames_from_grids",
]

VideoBudget = Literal["per_video", "per_frame"]
Span = tuple[int, int]


@dataclass(frozen=True)
class VideoFrames:
    """Where one video's frames are in one sample's prompt.

    Attributes:
        sample: the sample (batch row) the video is in.
        frames: ``(start, length)`` of each frame's visual tokens, in prompt order. A
            "frame" is what the model embeds as one time step: for the Qwen-VL families
            one temporal patch (two sampled frames), for the LLaVA video families one
            sampled frame.
    """

    sample: int
    frames: tuple[Span, ...]

    @property
    def size(self) -> int:
        """Visual tokens of the whole video."""
        return sum(n for _, n in self.frames)


@dataclass(frozen=True)
class BudgetGroup:
    """Visual tokens that share one budget.

    Attributes:
        sample: the sample the group is in.
        start: its first visual position.
        length: the positions it covers, from its first to its last visual token (text
            between the frames of a video included).
        size: its visual tokens (what the budget is a share of).
        kind: ``"image"`` (a span no video claims: an image, an InternVL tile group or
            frame), ``"video"`` (a whole video) or ``"frame"`` (one frame of a video).
        video: index of the video among the call's videos (prompt order), -1 for images.
        frames: ``(first frame, number of frames)`` the group holds (``(0, 0)`` for images).
        ivr_keep, ssr_keep: tokens the group keeps at each stage (filled in by the
            runtime's plan; ``None`` before).
    """

    sample: int
    start: int
    length: int
    size: int
    kind: Literal["image", "video", "frame"]
    video: int = -1
    frames: tuple[int, int] = (0, 0)
    ivr_keep: int | None = None
    ssr_keep: int | None = None


def frames_from_grids(
    runs: Sequence[tuple[int, int, int]], videos: Sequence[tuple[int, int]]
) -> tuple[VideoFrames, ...]:
    """Cut the runs of video tokens into frames.

    Args:
        runs: ``(sample, start, length)`` of every run of video tokens, in prompt order
            (sample by sample). A video is one run (Qwen2.5-VL, LLaVA-NeXT-Video,
            LLaVA-OneVision) or one run per frame (Qwen3-VL).
        videos: ``(frames, tokens_per_frame)`` of every video, in the same order (from
            ``video_grid_thw`` or the pixel values' shape).

    Returns:
        One :class:`VideoFrames` per video. Tokens a run holds after its video's last
        whole frame, fewer than a frame (LLaVA-OneVision's one newline row), belong to
        the last frame; a run cut one token short at its end (a prompt whose last token,
        the query, is a video token, which is never pruned) shortens the last frame.

    Raises:
        HalfvValueError: the runs and the videos disagree (a frame would straddle two
            runs, or tokens are left over); the message gives both.
    """
    out: list[VideoFrames] = []
    r, used = 0, 0  # current run, tokens of it already assigned

    def mismatch(why: str) -> HalfvValueError:
        msg = (
            f"the video tokens of the prompt do not match the videos' sizes ({why}): runs "
            f"(sample, start, length) {list(runs)}, videos (frames, tokens per frame) "
            f"{list(videos)}; pass the processor's video inputs unchanged"
        )
        return HalfvValueError(msg)

    for v, (count, per_frame) in enumerate(videos):
        if count < 1 or per_frame < 1:
            why = f"video {v} has {count} frames of {per_frame} tokens"
            raise mismatch(why)
        if r >= len(runs):
            why = f"video {v} has no video tokens"
            raise mismatch(why)
        sample = runs[r][0]
        frames: list[Span] = []
        for j in range(count):
            if used == runs[r][2]:  # this run is spent: the next frame opens the next run
                r, used = r + 1, 0
                if r >= len(runs) or runs[r][0] != sample:
                    why = f"video {v} ends after {j} of its {count} frames"
                    raise mismatch(why)
            _, start, length = runs[r]
            take = min(per_frame, length - used)
            last_of_sample = r + 1 == len(runs) or runs[r + 1][0] != sample
            if take < per_frame and not (
                j == count - 1 and last_of_sample and take + 1 == per_frame
            ):
                why = f"frame {j} of video {v} would straddle two runs"
                raise mismatch(why)
            frames.append((start + used, take))
            used += take
        rest = runs[r][2] - used
        if 0 < rest < per_frame:  # a trailing row of the last frame
            start, n = frames[-1]
            frames[-1] = (start, n + rest)
        elif rest:
            why = f"{rest} video tokens follow the last frame of video {v}"
            raise mismatch(why)
        out.append(VideoFrames(sample, tuple(frames)))
        r, used = r + 1, 0
    if r < len(runs):
        why = f"{len(runs) - r} run(s) of video tokens belong to no video"
        raise mismatch(why)
    return tuple(out)


def budget_groups(
    spans: Sequence[Sequence[Span]],
    videos: Sequence[VideoFrames],
    mode: VideoBudget,
    *,
    sizes: Sequence[Sequence[int]] | None = None,
) -> tuple[BudgetGroup, ...]:
    """Group each sample's visual spans into budget groups, in prompt order.

    Args:
        spans: per sample, the ``(start, length)`` visual spans in increasing order.
        videos: where each video's frames are (every frame inside one span, every span
            that holds a frame covered by that video's frames and nothing else).
        mode: ``"per_video"`` or ``"per_frame"`` (see the module docstring).
        sizes: per sample, the visual tokens of each span when a span covers non-visual
            positions (span joiners); ``None`` when sizes equal lengths.

    Returns:
        The groups, sample by sample, each sample's in position order. Spans no video
        claims are ``"image"`` groups, whatever the mode.

    Raises:
        HalfvValueError: a frame lies outside every span, a span mixes a video with other
            visual tokens, or (``per_video``) another span sits between two frames of a video.
    """
    if mode not in ("per_video", "per_frame"):
        msg = f"video budget mode {mode!r} is not one of 'per_video', 'per_frame'"
        raise HalfvValueError(msg)
    owner = _owners(spans, videos, sizes)
    groups: list[BudgetGroup] = []
    for b, sample_spans in enumerate(spans):
        done: set[int] = set()
        for i, (start, length) in enumerate(sample_spans):
            v = owner.get((b, i))
            size = sizes[b][i] if sizes is not None else length
            if v is None:
                groups.append(BudgetGroup(b, start, length, size, "image"))
                continue
            video = videos[v]
            if mode == "per_frame":
                first = sum(1 for s, _ in video.frames if s < start)
                groups.extend(
                    BudgetGroup(b, s, n, n, "frame", v, (first + j, 1))
                    for j, (s, n) in enumerate(
                        f for f in video.frames if start <= f[0] < start + length
                    )
                )
            elif v not in done:
                done.add(v)
                mine = sorted(j for (bb, j), w in owner.items() if bb == b and w == v)
                if mine != list(range(mine[0], mine[0] + len(mine))):
                    msg = (
                        f"video {v} of sample {b} has other visual tokens between its frames; "
                        "per-video budgets need its frames to be consecutive visual spans: use "
                        "video_budget='per_frame'"
                    )
                    raise HalfvValueError(msg)
                end = sample_spans[mine[-1]][0] + sample_spans[mine[-1]][1]
                groups.append(
                    BudgetGroup(
                        b, start, end - start, video.size, "video", v, (0, len(video.frames))
                    )
                )
    return tuple(groups)


def _owners(
    spans: Sequence[Sequence[Span]],
    videos: Sequence[VideoFrames],
    sizes: Sequence[Sequence[int]] | None,
) -> dict[tuple[int, int], int]:
    """``(sample, span index) -> video`` for the spans that hold video frames (checked:
    every frame inside one span, every such span all one video's frames)."""
    owner: dict[tuple[int, int], int] = {}  # (sample, span index) -> video
    for v, video in enumerate(videos):
        if not 0 <= video.sample < len(spans):
            msg = f"video {v} is in sample {video.sample}, the batch has {len(spans)}"
            raise HalfvValueError(msg)
        starts = [s for s, _ in spans[video.sample]]
        claimed: dict[int, int] = {}
        for start, n in video.frames:
            i = bisect.bisect_right(starts, start) - 1
            s, length = spans[video.sample][i] if i >= 0 else (0, 0)
            if i < 0 or start + n > s + length or n < 1:
                msg = (
                    f"frame ({start}, {n}) of video {v} (sample {video.sample}) lies outside "
                    f"every visual span {list(spans[video.sample])}"
                )
                raise HalfvValueError(msg)
            claimed[i] = claimed.get(i, 0) + n
        for i, n in claimed.items():
            size = sizes[video.sample][i] if sizes is not None else spans[video.sample][i][1]
            if owner.setdefault((video.sample, i), v) != v or n != size:
                msg = (
                    f"visual span {spans[video.sample][i]} of sample {video.sample} holds "
                    f"{size} visual tokens, video {v}'s frames cover {n} of them: a span must "
                    "hold one video's frames and nothing else"
                )
                raise HalfvValueError(msg)
    return owner
