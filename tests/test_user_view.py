"""benchmarks/bench_user_view.py --cpu-smoke runs end to end on tiny CPU models.

It goes through both families, batch 1 (TTFT, short and long answers) and a batch of 2
(TTFT, throughput), unpruned and halfv with and without the fast vision tower, writes
the JSON results and fills the docs block, so the GPU script cannot rot.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch

from benchmark_scripts import load_script

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "speed.md"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_script("bench_user_view.py")


@pytest.fixture(autouse=True)
def _restore_threads() -> Iterator[None]:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_user_view_cpu_smoke_schema(bench: ModuleType, tmp_path: Path) -> None:
    out, docs = tmp_path / "uv.json", tmp_path / "speed.md"
    docs.write_text(DOCS.read_text(encoding="utf-8"), encoding="utf-8")
    argv = ["--cpu-smoke", "--fast-vision", "--out", str(out), "--write-docs", "--docs", str(docs)]
    assert bench.main(argv) == 0

    data = json.loads(out.read_text(encoding="utf-8"))
    meta = data["meta"]
    for key in ("device_name", "torch", "transformers", "dtype", "date", "repeats", "models"):
        assert key in meta
    assert meta["fast_vision_backends"] == ["padded"]  # the CPU path
    records = data["records"]
    assert not [r for r in records if "median_ms" not in r], "a measurement failed or was skipped"
    got = {(r["model"], r["batch"], r["metric"], r["method"], r["vision"]): r for r in records}
    for model in bench.MODELS:
        visions = ("stock", "fast") if model.startswith("qwen") else ("stock",)
        for method in ("unpruned", "halfv"):
            for vision in visions:
                for metric in ("ttft_ms", "e2e_short_ms", "e2e_long_ms"):
                    rec = got[model, 1, metric, method, vision]
                    assert rec["median_ms"] > 0
                    assert len(rec["samples"]) == meta["repeats"]
                rec = got[model, 2, "throughput", method, vision]
                assert rec["new_tokens"] == meta["throughput_tokens"]
                assert rec["tokens_per_s"] == pytest.approx(
                    2 * rec["new_tokens"] / rec["median_ms"] * 1e3
                )
        assert (model, 2, "ttft_ms", "halfv", "stock") in got
        assert not [k for k in got if k[0] == model and k[4] == "fast" and "llava" in model]
    assert len(got) == len(records)  # no duplicates
    comparisons = {(s["model"], s["batch"], s["metric"], s["comparison"]) for s in data["speedups"]}
    assert ("qwen2.5-vl-7b", 1, "ttft_ms", "halfv_vs_unpruned") in comparisons
    assert ("qwen2.5-vl-7b", 2, "throughput", "fast_vs_stock_halfv") in comparisons
    assert ("llava-1.5-7b", 1, "e2e_long_ms", "halfv_vs_unpruned") in comparisons
    assert all(s["ratio"] > 0 and s["paired_ratio"] > 0 for s in data["speedups"])

    text = docs.read_text(encoding="utf-8")
    block = text.split(bench.DOCS_START, 1)[1].split(bench.DOCS_END, 1)[0]
    assert "**qwen2.5-vl-7b**" in block
    assert "**llava-1.5-7b**" in block
    assert "| 64 | 1 | fast |" in block


def test_batched_repeats_every_input(bench: ModuleType) -> None:
    full = {
        "input_ids": torch.arange(6).reshape(1, 6),
        "pixel_values": torch.randn(16, 5),
        "image_grid_thw": torch.tensor([[1, 4, 4]]),
    }
    out = bench.batched(full, 3)
    assert out["input_ids"].shape == (3, 6)
    assert out["pixel_values"].shape == (48, 5)
    assert out["image_grid_thw"].tolist() == [[1, 4, 4]] * 3
