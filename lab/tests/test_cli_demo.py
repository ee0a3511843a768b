"""``halfv demo`` on the tiny random LLaVA: measurements, output files, fallback and errors."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from halfv import cli
from halfv.config import PruningConfig
from halfv.flops import flops_from_token_counts
from halfv.flops.model_specs import ModelDims
from halfv.ops.budget import kept_count
from halfv.profile import ProfileReport, build_tiny, sources
from halfv_lab.cli.demo_cmd import layer_runs
from halfv_lab.demo import prefill_seconds, run_demo, sample_image

USER_ERROR = 2


def test_demo_function_measures_the_pruned_call(tmp_path: Path) -> None:
    image = tmp_path / "red.png"
    Image.new("RGB", (64, 48), (200, 30, 30)).save(image)
    config = PruningConfig(ivr_layer=2, ivr_keep=0.25, ssr_layer=5, ssr_mode="freeze")
    result = run_demo(
        out_dir=tmp_path / "out",
        tiny=True,
        kl=False,
        image=image,
        question="What colour?",
        max_new_tokens=3,
        config=config,
    )
    assert result.kind == "tiny-random"
    assert result.fallback_reason is None
    assert result.config == config
    kept = result.kept_visual
    assert kept == [576, 576] + [kept_count(576, 0.25)] * 6
    frozen = [layer.frozen for layer in result.stats.layers]
    assert frozen == [False] * 5 + [True] * 3
    text = result.stats.prompt_tokens[0] - 576
    rows = [layer.query_rows[0] for layer in result.stats.layers]
    assert rows == [576 + text] * 2 + [144 + text] * 3 + [text] * 3
    model: Any = build_tiny("llava").model
    full = flops_from_token_counts(ModelDims.from_config(model.config), [576 + text] * 8)
    assert result.flops.full_exact == full.pruned_exact  # the unpruned counts, priced alike
    assert result.flops.speedup_exact > 2.0
    assert result.prefill_full > 0
    assert result.prefill_pruned > 0
    assert isinstance(result.answer_full, str)
    assert isinstance(result.answer_pruned, str)
    report = ProfileReport.from_json(result.profile_json)
    assert report.kl is None
    assert report.inputs == [str(image)]
    assert report.lifecycle == result.lifecycle
    assert result.plot.read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "lifecycle.png",
        "profile.json",
    ]


def test_demo_cli_falls_back_to_the_tiny_model_and_prints_everything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def unavailable(family: str) -> object:
        msg = f"no trained {family} checkpoint in the cache"
        raise FileNotFoundError(msg)

    zoo = types.ModuleType("halfv_lab.zoo")
    zoo.load_trained = unavailable  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "halfv_lab.zoo", zoo)
    monkeypatch.setenv("COLUMNS", "300")  # rich wraps at 80 columns otherwise
    out = tmp_path / "demo-out"
    code = cli.main(["demo", "--out", str(out), "--max-new-tokens", "2"])
    stdout = capsys.readouterr().out
    assert code == 0
    for needle in (
        "model: tiny random LLaVA",
        "no trained llava checkpoint in the cache",
        "image: a red circle drawn like easy-VQA's images",
        "question: What color is the shape?",
        "(the llava adapter's default)",
        "Kept visual tokens per decoder layer",
        "576",
        "prefill FLOPs",
        "prefill time",
        "answer without halfv",
        "answer with halfv",
        "lifecycle: suggested IVR layer",
    ):
        assert needle in stdout, needle
    report = ProfileReport.from_json(out / "profile.json")
    assert report.kl is not None  # KL runs by default on the tiny model
    assert report.lifecycle.ssr_mode in ("prune", "freeze")
    assert (out / "lifecycle.png").is_file()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--image", "{tmp}/missing.jpg"], "missing.jpg' does not exist"),
        (["--image", "{tmp}/bad.png"], "bad.png' cannot be read as an image"),
        (["--config", "{tmp}/unknown.json"], "unknown key 'ivr_layers'"),
        (["--config", "{tmp}/range.json"], "ivr_keep=0"),
        (["--question", "   "], "--question '   ' has no text"),
        (["--max-new-tokens", "0"], "--max-new-tokens 0"),
    ],
)
def test_demo_bad_input_is_one_line_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], needle: str
) -> None:
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    (tmp_path / "unknown.json").write_text('{"ivr_layers": 2}')
    (tmp_path / "range.json").write_text('{"ivr_keep": 0}')
    out = tmp_path / "out"
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    code = cli.main(["demo", "--tiny", "--out", str(out), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == USER_ERROR
    assert len(err) == 1, err
    assert err[0].startswith("halfv: error: ")
    assert needle in err[0]
    assert not out.exists()


def test_sample_image_is_an_easy_vqa_style_red_shape() -> None:
    image, note = sample_image()
    assert image.size == (64, 64)
    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == (255, 255, 255)
    assert image.getpixel((32, 30)) == (220, 30, 30)
    assert "red circle" in note


def test_prefill_seconds_is_a_median_of_three() -> None:
    calls: list[int] = []

    def fake_model(**kwargs: object) -> None:
        assert kwargs["logits_to_keep"] == 1
        calls.append(1)

    assert prefill_seconds(fake_model, {"input_ids": None}) >= 0.0  # type: ignore[arg-type]
    assert len(calls) == 4  # one warm-up, three timed


def test_layer_runs_groups_equal_layers() -> None:
    assert layer_runs([576, 288, 288, 288, 288], [False, False, False, True, True]) == [
        (0, 0, 576, False),
        (1, 2, 288, False),
        (3, 4, 288, True),
    ]


def test_demo_uses_the_trained_model_when_the_zoo_has_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tiny = build_tiny("llava", layers=3)
    trained = sources.ModelSource("llava", tiny.model, tiny.builder, "trained", "zoo stand-in")
    monkeypatch.setattr("halfv_lab.demo.load_trained_source", lambda family: trained)
    calibrated = PruningConfig(ivr_layer=1, ivr_keep=0.5, ssr_layer=2, ssr_mode="prune")
    monkeypatch.setattr("halfv_lab.zoo.calibrated_schedule", lambda family: calibrated)
    result = run_demo(out_dir=tmp_path / "o", max_new_tokens=1)
    assert (result.kind, result.model, result.fallback_reason) == ("trained", "zoo stand-in", None)
    assert result.config == calibrated  # the checkpoint's schedule, not the adapter's default
    assert "calibrated" in result.schedule_source
    assert ProfileReport.from_json(result.profile_json).kl is None  # no KL on the trained model
