"""Video budgets on the families added for issue #20: Qwen3-VL (one span per frame, a
timestamp between frames), Qwen2-VL (one run per video), LLaVA-OneVision (one run: pooled
frames plus a newline row) and LLaVA-NeXT-Video (one run of pooled frames).

Each family: :func:`halfv.testing.video.check_video_budgets` (both ``video_budget`` modes:
the groups the adapter's frames give, the budgets, the pruned prefill against the
independent masked reference) and cached decode against a from-scratch recompute.
"""

from __future__ import annotations

from typing import Any

import pytest

import halfv
from halfv.testing import check_cached_decode
from halfv.testing.video import check_video_budgets
from tiny_easy import build_llava_next_video, build_llava_onevision
from tiny_qwen3 import build_qwen2_vl, build_qwen3_vl

#: family -> (builder, frames per video as the model embeds them)
FAMILIES: dict[str, tuple[Any, int]] = {
    "qwen3_vl": (build_qwen3_vl, 2),  # 4 sampled frames, temporal patch 2
    "qwen2_vl": (build_qwen2_vl, 2),
    "llava_onevision": (build_llava_onevision, 4),
    "llava_next_video": (build_llava_next_video, 4),
}
SAMPLES = [[3, "img", 2, "vid", 4], [2, "vid", 3]]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_video_budgets(family: str) -> None:
    builder, frames = FAMILIES[family]
    tiny = builder()
    stats = check_video_budgets(tiny.model, tiny.prompt(SAMPLES, seed=3), [frames, frames])
    sizes = [g.size for g in stats["per_frame"].budget_groups if g.kind == "frame"]
    assert max(sizes) - min(sizes) <= 1  # equal frames (OneVision's last: + a newline row)
    for mode in ("per_video", "per_frame"):
        config = halfv.PruningConfig(
            ivr_layer=2, ivr_keep=0.5, ssr_layer=4, ssr_mode="prune", ssr_keep=0.25
        ).model_copy(update={"video_budget": mode})
        check_cached_decode(tiny.model, tiny.prompt([SAMPLES[1]], seed=4), config)
