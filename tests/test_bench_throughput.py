"""benchmarks/bench_throughput.py --cpu-smoke runs end to end on a tiny CPU model.

It compiles the decode step of each side per batch during warmup (the ``eager`` backend on
the CPU), times ``generate(1)`` and ``generate(n)`` per side in turn, checks that nothing
compiles while timing, writes the JSON results and fills the docs block; the report of
two results files is one table. So the GPU script cannot rot.
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
    return load_script("bench_throughput.py")


@pytest.fixture(autouse=True)
def _restore_threads() -> Iterator[None]:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
    torch._dynamo.reset()


def test_throughput_cpu_smoke(bench: ModuleType, tmp_path: Path) -> None:
    out, docs = tmp_path / "tp.json", tmp_path / "speed.md"
    docs.write_text(DOCS.read_text(encoding="utf-8"), encoding="utf-8")
    argv = ["--cpu-smoke", "--models", "llava-1.5-7b", "--cut", "2x5", "--out", str(out)]
    assert bench.main([*argv, "--write-docs", "--docs", str(docs)]) == 0

    data = json.loads(out.read_text(encoding="utf-8"))
    meta = data["meta"]
    assert meta["recipe"] == "static-compiled"
    assert "compiles" in meta["warmup_note"]
    records = data["records"]
    timed = {(r["batch"], r["new_tokens"], r["side"]): r for r in records if "tokens_per_s" in r}
    assert set(timed) == {(b, n, s) for b, n in ((1, 3), (1, 5), (2, 3)) for s in bench.SIDES}
    assert {r["status"] for r in records if "status" in r} == {"cut"}
    assert {(r["batch"], r["new_tokens"]) for r in records if "status" in r} == {(2, 5)}
    for (batch, new, _side), rec in timed.items():
        assert rec["graphs_compiled"] == 1  # the warmup compiled this side's decode shape
        assert rec["recompiles_timed"] == rec["graph_breaks_timed"] == 0
        assert rec["max_cache_len"] == rec["prompt"] + (5 if batch == 1 else 3)
        assert len(rec["samples_ms"]) == len(rec["samples_1_ms"]) == meta["repeats"]
        assert rec["tokens_per_s"] == pytest.approx(batch * new / rec["median_ms"] * 1e3)
        steps = [
            (t - o) / (new - 1) for t, o in zip(rec["samples_ms"], rec["samples_1_ms"], strict=True)
        ]
        assert rec["ms_per_step"] == pytest.approx(sorted(steps)[len(steps) // 2])
    assert len(data["speedups"]) == 3

    block = docs.read_text(encoding="utf-8").split(bench.DOCS_START, 1)[1]
    block = block.split(bench.DOCS_END, 1)[0]
    assert "**llava-1.5-7b**" in block
    assert "| 64 | 2 | 3 |" in block
    assert "cut (batch x new): 2x5" in block
    assert "graphs compiled while timing: 0" in block

    # two results files report as one table
    other = tmp_path / "other.json"
    second = json.loads(out.read_text(encoding="utf-8"))
    for r in second["records"]:
        r["model"] = "qwen2.5-vl-7b"
    other.write_text(json.dumps(second), encoding="utf-8")
    table = bench.markdown(bench.merged([out, other]))
    assert "**llava-1.5-7b**" in table
    assert "**qwen2.5-vl-7b**" in table


@pytest.mark.parametrize("recipe", ["dynamic", "static", "static-compiled"])
def test_recipe_arguments(bench: ModuleType, recipe: str) -> None:
    kwargs = bench.recipe_kwargs(recipe, 100, "inductor", "cuda")
    if recipe == "dynamic":
        assert kwargs == {}
        return
    assert kwargs["cache_implementation"] == "static"
    assert kwargs["max_cache_len"] == 100
    if recipe == "static":
        assert kwargs["disable_compile"] is True  # on CUDA transformers would compile
    else:
        config = kwargs["compile_config"]
        assert (config.fullgraph, config.dynamic, config.mode) == (True, False, "reduce-overhead")
        assert not config._compile_all_devices
