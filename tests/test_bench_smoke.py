"""The speed benchmarks run end to end on tiny CPU models, so the scripts cannot rot.

``benchmarks/bench_speed.py --cpu-smoke`` goes through every model family, method and
metric of the GPU run (prefill, KV bytes, TTFT, decode, selection micro-timings, the
report and the docs block) with tiny models; ``benchmarks/bench_cpu.py`` runs on tiny random
models (its zoo mode is tested in ``lab/tests/test_bench_cpu_zoo.py``).
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
def bench_speed() -> ModuleType:
    return load_script("bench_speed.py")


@pytest.fixture(autouse=True)
def _restore_threads() -> Iterator[None]:
    """--cpu-smoke runs on one thread; give the other tests their thread count back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_speed_cpu_smoke_measures_everything(bench_speed: ModuleType, tmp_path: Path) -> None:
    out, docs = tmp_path / "speed.json", tmp_path / "speed.md"
    docs.write_text(DOCS.read_text(encoding="utf-8"), encoding="utf-8")
    argv = ["--cpu-smoke", "--out", str(out), "--write-docs", "--docs", str(docs)]
    assert bench_speed.main(argv) == 0

    data = json.loads(out.read_text(encoding="utf-8"))
    records = data["records"]
    assert not [r for r in records if "value" not in r], "a measurement failed or was OOM"
    got = {(r["model"], r["tokens"], r["method"], r["metric"]): r for r in records}
    for model in bench_speed.MODELS:
        for n in (64, 128):
            for method in bench_speed.METHODS:
                assert (model, n, method, "prefill_ms") in got
                assert (model, n, method, "kv_cache_bytes") in got
            for metric in ("fps_ms", "halfv_select_ms", "relevance_ms"):
                assert (model, n, "selection", metric) in got
        for method in ("unpruned", "halfv"):
            assert (model, 64, method, "ttft_ms") in got
            assert (model, 128, method, "decode_ms_per_token") in got
        kv = {m: got[model, 128, m, "kv_cache_bytes"]["value"] for m in bench_speed.METHODS}
        assert kv["halfv"] == kv["ideal"] < kv["fastv-sdpa"] < kv["unpruned"] == kv["fastv-eager"]
        # ideal runs halfv's schedule: the same number of tokens survives at every layer
        kept = {m: got[model, 128, m, "prefill_ms"]["kept"] for m in ("halfv", "ideal")}
        assert kept["halfv"] == kept["ideal"]
        # prefill is timed in rounds, the methods in turn; halfv - ideal is paired per round
        paired = got[model, 128, "halfv", "minus_ideal_ms"]
        halfv_t, ideal_t = (got[model, 128, m, "prefill_ms"]["samples"] for m in ("halfv", "ideal"))
        assert len(halfv_t) == len(ideal_t) == paired["rounds"] == data["meta"]["repeats"]
        assert paired["samples"] == [h - i for h, i in zip(halfv_t, ideal_t, strict=True)]
    assert data["meta"]["interleaved"]
    assert data["meta"]["models"].keys() == set(bench_speed.MODELS)

    text = docs.read_text(encoding="utf-8")
    block = text.split(bench_speed.DOCS_START)[1].split(bench_speed.DOCS_END)[0]
    assert "not yet run" not in block.lower()
    assert all(f"**{m}**" in block for m in bench_speed.MODELS)
    assert (
        text.split(bench_speed.DOCS_START)[0] == DOCS.read_text().split(bench_speed.DOCS_START)[0]
    )

    # the report of a saved file is the same table
    assert bench_speed.markdown(json.loads(out.read_text())) in block


def test_docs_block_is_in_place(bench_speed: ModuleType) -> None:
    text = DOCS.read_text(encoding="utf-8")
    assert text.count(bench_speed.DOCS_START) == 1
    assert text.count(bench_speed.DOCS_END) == 1


def test_bench_cpu_random_models(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cpu.json"
    argv = ["--dims", "tiny", "--tokens", "64", "--warmup", "0", "--repeats", "1", "--threads", "1"]
    assert load_script("bench_cpu.py").main([*argv, "--out", str(out), "--markdown"]) == 0
    data = json.loads(out.read_text(encoding="utf-8"))
    assert [f["family"] for f in data["families"]] == ["qwen2_5_vl", "llava", "internvl"]
    for family in data["families"]:
        assert family["halfv"]["kv_ratio"] < 1.0
        assert family["halfv"]["ratio"] > 0.0
    assert "| qwen2_5_vl |" in capsys.readouterr().out


def test_speed_script_has_its_own_help(
    bench_speed: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        bench_speed.main(["--help"])
    assert exc.value.code == 0
    assert "--cpu-smoke" in capsys.readouterr().out


def test_profile_prefill_cpu_smoke(tmp_path: Path) -> None:
    """``benchmarks/profile_prefill.py`` end to end on a tiny model (so it cannot rot)."""
    script = load_script("profile_prefill.py")
    out = tmp_path / "profile.json"
    assert script.main(["--cpu-smoke", "--decode", "2", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["summary"]) == {"unpruned", "halfv", "ideal"}
    assert result["summary"]["unpruned"]["ratio_to_unpruned"] == 1.0
    assert len(result["samples"]["halfv"]) == 2  # --cpu-smoke: two rounds
    for method in ("halfv", "ideal"):
        profile = result["profiles"][method]
        assert profile["host_ms"] > 0
        assert "aten::linear" in profile["ops"]
    # only halfv scores and runs FPS: its extra ops show up in the comparison
    deltas = {row["op"]: row for row in result["halfv_minus_ideal"]["cpu"]}
    assert deltas, "no differences between halfv and the ideal schedule"
    # --decode: two generate calls per method, their difference per step
    assert set(result["decode"]) == {"unpruned", "halfv", "ideal"}
    assert result["decode"]["halfv"]["per_step"].keys() >= {"wall_ms", "host_ms", "kernels"}
    # --report summarises a saved result: paired figures and the kernel-time split
    split = script.kernel_breakdown(result)
    assert split["total"] == pytest.approx(
        split["fps_kernel"] + split["gemm"] + split["other_aten"]
    )
    pairs = script.paired(result)
    halfv_t, ideal_t = result["samples"]["halfv"], result["samples"]["ideal"]
    diffs = [a - b for a, b in zip(halfv_t, ideal_t, strict=True)]
    assert len(diffs) == 2  # two rounds: their median is their mean
    assert pairs["halfv_minus_ideal_ms"] == pytest.approx(sum(diffs) / 2)
    assert script.main(["--report", str(out)]) == 0


def test_merged_runs_report_fps_alone_once(bench_speed: ModuleType) -> None:
    runs = [
        json.loads(f.read_text(encoding="utf-8"))
        for f in sorted((REPO / "benchmarks" / "results").glob("speed-h100-v10-*.json"))
    ]
    assert len(runs) == 2
    text = bench_speed.markdown(bench_speed.merge_results(runs))
    lines = [line for line in text.splitlines() if line.startswith("FPS alone")]
    assert len(lines) == 1
    assert "(2 runs, one per results file)" in lines[0]
    assert bench_speed.markdown(runs[0]).count("FPS alone") == 1
    assert "runs, one per" not in bench_speed.markdown(runs[0])
