"""Video as a first-class input: budget groups per video or per frame, on tiny models.

Qwen2.5-VL videos (``t > 1`` frames in one run of video tokens), mixed with images, in
batches, under both ``video_budget`` modes, against the independent masked reference
(:func:`halfv.testing.reference.masked_reference`), the model's own attention (eager) and
a from-scratch recompute of cached decode; InternVL videos, whose frames are images.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

import halfv
from halfv.errors import HalfvValueError
from halfv.ops.budget import kept_count
from halfv.ops.video import VideoBudget
from halfv.testing import check_cached_decode, check_keep_all_exact, check_pruned_prefill
from halfv.testing.reference import attention_topk, masked_reference
from halfv.testing.video import check_video_budgets
from tiny_video import Segment, prompt, qwen_prompt, tiny_model

MODES: tuple[VideoBudget, ...] = ("per_video", "per_frame")
PRUNE = halfv.PruningConfig(ivr_layer=2, ivr_keep=0.5, ssr_layer=4, ssr_mode="prune", ssr_keep=0.25)
FREEZE = halfv.PruningConfig(ivr_layer=2, ivr_keep=0.5, ssr_layer=4, ssr_mode="freeze")
PER = 16  # tokens per image and per frame of the tiny models
MIXED: list[list[Segment]] = [[3, "img", 2, ("vid", 3), 4]]


def _config(base: halfv.PruningConfig, mode: str) -> halfv.PruningConfig:
    return base.model_copy(update={"video_budget": mode})


def _visual_kept(stats: Any, layer: int, sample: int, lo: int, hi: int) -> int:
    return sum(1 for p in stats.kept_positions[layer][sample] if lo <= p < hi)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("base", [PRUNE, FREEZE], ids=["prune", "freeze"])
def test_qwen_video_pruned_prefill_equals_reference(mode: str, base: halfv.PruningConfig) -> None:
    tiny = tiny_model("qwen2_5_vl")
    inputs = qwen_prompt(MIXED, seed=1)
    stats = check_pruned_prefill(tiny.model, inputs, _config(base, mode))
    image, video = 4, 24  # the positions where the image and the video start
    kinds = [(g.kind, g.start, g.size, g.frames) for g in stats.budget_groups]
    if mode == "per_video":
        assert kinds == [("image", image, PER, (0, 0)), ("video", video, 3 * PER, (0, 3))]
        frames = [
            _visual_kept(stats, 2, 0, video + f * PER, video + (f + 1) * PER) for f in range(3)
        ]
        assert sum(frames) == kept_count(3 * PER, 0.5)  # one budget over the video
    else:
        assert kinds[0] == ("image", image, PER, (0, 0))
        assert kinds[1:] == [("frame", video + f * PER, PER, (f, 1)) for f in range(3)]
        for f in range(3):  # every frame keeps its own share
            assert _visual_kept(stats, 2, 0, video + f * PER, video + (f + 1) * PER) == 8
        if base.ssr_mode == "prune":
            for f in range(3):
                assert _visual_kept(stats, 4, 0, video + f * PER, video + (f + 1) * PER) == 4
    assert all(g.ivr_keep == kept_count(g.size, 0.5) for g in stats.budget_groups)


def test_qwen_per_video_budget_follows_relevance_not_frames() -> None:
    """With a video-wide budget, frames may keep unequal shares (the budget moves to the
    frames the query attends to); per frame, each keeps exactly its share."""
    tiny = tiny_model("qwen2_5_vl")
    inputs = qwen_prompt([[2, ("vid", 4), 3]], seed=3)
    config = halfv.PruningConfig(ivr_layer=2, ivr_keep=0.25, ivr_policy="attention")
    shares = {}
    for mode in MODES:
        with halfv.apply(tiny.model, _config(config, mode)) as handle, torch.no_grad():
            tiny.model(**inputs)
        stats = handle.stats
        assert stats is not None
        shares[mode] = [_visual_kept(stats, 2, 0, 3 + f * PER, 3 + (f + 1) * PER) for f in range(4)]
    assert shares["per_frame"] == [4, 4, 4, 4]
    assert sum(shares["per_video"]) == 16
    assert shares["per_video"] != shares["per_frame"]


@pytest.mark.parametrize("mode", MODES)
def test_qwen_video_relevance_follows_model_attention(mode: VideoBudget) -> None:
    """Eager: SSR keeps the top of the model's own attention of the query row,
    renormalised over each budget group (the whole video, or each frame)."""
    tiny = tiny_model("qwen2_5_vl", "eager")
    inputs = qwen_prompt([[2, ("vid", 3), 3]], seed=4)
    config = halfv.PruningConfig(
        ivr_layer=2,
        ivr_keep=0.5,
        ivr_policy="uniform",
        ssr_layer=4,
        ssr_mode="prune",
        ssr_keep=0.25,
        relevance_scaling=True,
        video_budget=mode,
    )
    with halfv.apply(tiny.model, config) as handle, torch.no_grad():
        tiny.model(**inputs)
    stats = handle.stats
    assert stats is not None
    adapter = halfv.get_adapter_for(tiny.model)
    ref = masked_reference(
        tiny.model,
        inputs,
        {2: stats.kept_positions[2]},
        layers=adapter.decoder_layers(tiny.model),
        visual_ids=adapter.visual_token_ids(tiny.model),
        attention_layers=(3,),
    )
    visual = inputs["mm_token_type_ids"] > 0
    candidates = torch.zeros_like(visual)
    candidates[0, list(stats.kept_positions[2][0])] = True
    groups = [[(g.start, g.length) for g in stats.budget_groups]]
    assert len(groups[0]) == (1 if mode == "per_video" else 3)
    expected = attention_topk(ref.query_attention[3], candidates & visual, groups, 0.25)
    got = [p for p in stats.kept_positions[4][0] if bool(visual[0, p])]
    assert got == expected[0]


@pytest.mark.parametrize("mode", MODES)
def test_qwen_video_cached_decode_equals_recompute(mode: str) -> None:
    tiny = tiny_model("qwen2_5_vl")
    check_cached_decode(tiny.model, qwen_prompt(MIXED, seed=5), _config(PRUNE, mode))


def test_qwen_video_keep_all_is_exact() -> None:
    tiny = tiny_model("qwen2_5_vl")
    check_keep_all_exact(tiny.model, qwen_prompt(MIXED, seed=6))


@pytest.mark.parametrize("mode", MODES)
def test_qwen_video_batch_equals_single(mode: str) -> None:
    tiny = tiny_model("qwen2_5_vl")
    samples: list[list[Segment]] = [
        [3, "img", 2, ("vid", 3), 4],
        [2, ("vid", 2), 1, "img", 5],
        [4, ("vid", 1), 2],
    ]
    batch = qwen_prompt(samples, seed=7)
    with halfv.apply(tiny.model, _config(PRUNE, mode)) as handle, torch.no_grad():
        batch_logits = tiny.model(**batch).logits[:, -1]
        batch_stats = handle.stats
        assert batch_stats is not None
        for i, sample in enumerate(samples):
            pad = int((batch["attention_mask"][i] == 0).sum())
            single_logits = tiny.model(**qwen_prompt([sample], seed=7, first=i)).logits[:, -1]
            torch.testing.assert_close(batch_logits[i : i + 1], single_logits, atol=1e-4, rtol=1e-4)
            single = handle.stats
            assert single is not None
            for layer, kept in single.kept_positions.items():
                assert tuple(p for p in batch_stats.kept_positions[layer][i] if p >= pad) == tuple(
                    p + pad for p in kept[0]
                )
            mine = [g for g in batch_stats.budget_groups if g.sample == i]
            assert [(g.kind, g.start - pad, g.size) for g in mine] == [
                (g.kind, g.start, g.size) for g in single.budget_groups
            ]
    videos = [g.video for g in batch_stats.budget_groups if g.kind != "image"]
    assert sorted(set(videos)) == [0, 1, 2]  # videos are numbered across the batch


def test_qwen_grid_that_disagrees_with_the_prompt_is_refused() -> None:
    tiny = tiny_model("qwen2_5_vl")
    inputs = qwen_prompt([[2, ("vid", 2), 3]], seed=8)
    inputs["video_grid_thw"] = torch.tensor([[3, 8, 8]])  # 3 frames, the prompt holds 2
    with halfv.apply(tiny.model, PRUNE), pytest.raises(HalfvValueError, match="do not match"):
        tiny.model(**inputs)


def test_video_budget_is_validated() -> None:
    assert halfv.PruningConfig().video_budget == "per_video"
    with pytest.raises(ValueError, match="'per_video' \\(all frames of a video share"):
        halfv.PruningConfig(video_budget="per-frame")  # type: ignore[arg-type]
    with pytest.raises(halfv.ConfigError, match="video_budget"):
        halfv.apply(tiny_model("qwen2_5_vl").model, {"video_budget": "clip"})


@pytest.mark.parametrize("mode", MODES)
def test_internvl_frames_are_images(mode: str) -> None:
    """InternVL writes each frame as an image: every frame is its own budget in both modes
    (its inputs do not say which spans form a video), and pruning stays exact."""
    tiny = tiny_model("internvl")
    inputs = prompt("internvl", [[3, ("vid", 3), 4], [2, "img", 1, ("vid", 2), 2]], seed=9)
    stats = check_pruned_prefill(tiny.model, inputs, _config(PRUNE, mode))
    assert [g.kind for g in stats.budget_groups] == ["image"] * 6
    assert all(g.size == PER and g.ivr_keep == 8 for g in stats.budget_groups)
    check_cached_decode(
        tiny.model, prompt("internvl", [[3, ("vid", 2), 4]], seed=9), _config(PRUNE, mode)
    )


@pytest.mark.parametrize("mode", MODES)
def test_qwen_prompt_ending_on_a_video_token(mode: VideoBudget) -> None:
    """The last prompt token (the query) is a video token: it is never pruned, and the
    last frame's group is one token shorter."""
    tiny = tiny_model("qwen2_5_vl")
    inputs = qwen_prompt([[3, ("vid", 2)]], seed=2)
    cut = ("input_ids", "attention_mask", "mm_token_type_ids")
    inputs = {k: v[:, :-1] if k in cut else v for k, v in inputs.items()}  # drop vision_end
    stats = check_pruned_prefill(tiny.model, inputs, _config(PRUNE, mode))
    sizes = [g.size for g in stats.budget_groups]
    assert sizes == ([2 * PER - 1] if mode == "per_video" else [PER, PER - 1])
    last = int(inputs["input_ids"].shape[1]) - 1
    assert all(last in kept[0] for kept in stats.kept_positions.values())


def test_video_budget_contract_check() -> None:
    """halfv.testing.video.check_video_budgets passes on Qwen2.5-VL and fails on a family
    whose adapter reports no frames (InternVL: its frames are images)."""
    tiny = tiny_model("qwen2_5_vl")
    inputs = qwen_prompt([[3, "img", 2, ("vid", 3), 4], [2, ("vid", 2), 3]], seed=11)
    stats = check_video_budgets(tiny.model, inputs, frames_per_video=[3, 2])
    assert set(stats) == {"per_video", "per_frame"}
    internvl = tiny_model("internvl")
    frames = prompt("internvl", [[3, ("vid", 3), 4]], seed=11)
    with pytest.raises(AssertionError, match="expected"):
        check_video_budgets(internvl.model, frames, frames_per_video=[3])
