"""benchmarks/bench_video.py --cpu-smoke runs end to end on tiny CPU models.

It goes through the video cell (Qwen2.5-VL and Qwen3-VL, a clip through the real video
resize rules) and the backbone cells (Qwen3-VL and Gemma 3 images), writes the JSON
results and fills both docs blocks, so the GPU script cannot rot. A family without a
registered adapter must be recorded as such, not crash the run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch

from benchmark_scripts import load_script
from halfv.plugins import get_components

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_script("bench_video.py")


@pytest.fixture(autouse=True)
def _restore_threads() -> Iterator[None]:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _registered(model_type: str) -> bool:
    return model_type in get_components().adapters.model_types()


def test_real_clip_sizes() -> None:
    """A 10-s clip at 2 fps of 720x1280 frames, through transformers' own resize rules."""
    vm = load_script("video_models.py")
    qwen25 = vm.video_rule("qwen2_5_vl").grid(20, 720, 1280)
    qwen3 = vm.video_rule("qwen3_vl").grid(20, 720, 1280)
    assert qwen25 == (10, 40, 72)  # 560x1008 pixels: 720 tokens per temporal patch
    assert qwen3 == (10, 40, 72)  # 640x1152 pixels, patch 16
    uncapped = vm.video_rule("qwen3_vl", qwen3_size=(4096, 786432)).grid(20, 720, 1280)
    assert uncapped[1] * uncapped[2] < 40 * 72  # a smaller total budget shrinks the frames


def test_video_bench_cpu_smoke(bench: ModuleType, tmp_path: Path) -> None:
    out, docs = tmp_path / "video.json", tmp_path / "docs"
    docs.mkdir()
    for name in ("video.md", "speed.md"):
        (docs / name).write_text((REPO / "docs" / name).read_text(encoding="utf-8"), "utf-8")
    argv = ["--cpu-smoke", "--video", "--backbones", "--out", str(out), "--write-docs"]
    assert bench.main([*argv, "--docs-dir", str(docs)]) == 0

    data = json.loads(out.read_text(encoding="utf-8"))
    got = {(r["bench"], r["model"], r["visual"], r["method"]): r for r in data["records"]}
    kinds = {"qwen2.5-vl-7b": "qwen2_5_vl", "qwen3-vl-8b": "qwen3_vl", "gemma-3-12b": "gemma3"}
    cells = [("video", m) for m in bench.VIDEO_MODELS] + [
        ("backbones", m) for m in bench.BACKBONE_MODELS
    ]
    for kind, model in cells:
        recs = [r for k, r in got.items() if k[:2] == (kind, model)]
        assert {r["method"] for r in recs} >= {"unpruned", "halfv"}
        for rec in recs:
            if rec["method"] != "unpruned" and not _registered(kinds[model]):
                assert "UnknownComponentError" in rec["status"]
                continue
            assert rec["prefill_ms"] > 0
            assert rec["ttft_ms"] > 0
            assert rec["kv_bytes"] > 0
            if rec["method"] == "unpruned":
                continue
            assert rec["kept_visual"][-1] < rec["visual"]  # halfv pruned something
            if kind == "video":
                t, h, w = rec["video_grid_thw"]
                assert rec["visual"] == t * h * w // 4
                groups = [g[0] for g in rec["groups"]]
                expect = ["video"] if rec["method"] == "halfv" else ["frame"] * t
                assert groups == expect
                assert sum(g[1] for g in rec["groups"]) == rec["visual"]
    video = (docs / "video.md").read_text(encoding="utf-8")
    block = video.split(bench.VIDEO_DOCS[1], 1)[1].split(bench.VIDEO_DOCS[2], 1)[0]
    assert "| qwen2.5-vl-7b | 16 | halfv-frame |" in block
    speed = (docs / "speed.md").read_text(encoding="utf-8")
    block = speed.split(bench.BACKBONE_DOCS[1], 1)[1].split(bench.BACKBONE_DOCS[2], 1)[0]
    assert "| gemma-3-12b | 64 | unpruned |" in block
    assert "| qwen3-vl-8b | 32 | halfv |" in block
