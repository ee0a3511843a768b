"""halfv.profile: hidden-state capture, TME curves, reports, inputs, profile/calibrate CLI."""

from __future__ import annotations

import json
import math
import sys
import types
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from PIL import Image
from rich.console import Console

import halfv
from halfv import cli
from halfv.config import PruningConfig, load_config
from halfv.estimators.tme import TMEEstimator
from halfv.ops.budget import kept_count
from halfv.plugins import get_adapter_for
from halfv.profile import (
    ModelSource,
    ProfileCurves,
    ProfileReport,
    Prompt,
    TrainedUnavailableError,
    build_report,
    build_tiny,
    capture_slots,
    collect_curves,
    find_images,
    load_image,
    load_trained_source,
    slot_entropies,
    suggested_config,
)
from halfv.profile.sources import ToyProcessor, ZooInputBuilder
from halfv.saturation import freeze_onset, layer_redundancy_kl
from tiny import BUILDERS, Tiny

USER_ERROR = 2
EST = TMEEstimator(k=8)


@pytest.fixture(scope="module")
def llava() -> Tiny:
    return BUILDERS["llava"]()


@pytest.fixture
def photos(tmp_path: Path) -> list[Path]:
    """Two real PNG files (scikit-image sample photos, downscaled)."""
    from skimage import data

    paths = []
    for name, array in (("cat.png", data.chelsea()), ("coffee.png", data.coffee())):
        path = tmp_path / "photos" / name
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(array).resize((96, 64)).save(path)
        paths.append(path)
    return paths


# --------------------------------------------------------------------------- collect
@pytest.mark.parametrize("family", ["llava", "qwen2_5_vl", "internvl"])
def test_capture_slots_are_normed_layer_inputs_and_final_output(family: str) -> None:
    tiny = BUILDERS[family]()
    inputs = tiny.prompt([[5, "img", 7]])
    model: Any = tiny.model
    adapter = get_adapter_for(model)
    slots = capture_slots(model, adapter, inputs)
    num_layers = len(adapter.decoder_layers(model))
    assert slots.shape == (num_layers + 1, inputs["input_ids"].shape[1], 64)
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True)
        norm = adapter.final_norm(model)
        for i in range(num_layers):  # hidden_states[i] is the input of layer i
            torch.testing.assert_close(slots[i], norm(out.hidden_states[i])[0])
        logits = model.lm_head(slots[-1][-1])
    torch.testing.assert_close(logits, out.logits[0, -1], rtol=1e-4, atol=1e-4)


def test_slot_entropies_split_visual_and_text_rows() -> None:
    gen = torch.Generator().manual_seed(0)
    text = torch.randn(3, 10, 16, generator=gen)
    direction = torch.randn(16, generator=gen)
    rank_one = torch.randn(3, 6, 1, generator=gen) * direction  # visual rows: rank 1
    slots = torch.cat([text[:, :4], rank_one, text[:, 4:]], dim=1)
    visual = torch.zeros(16, dtype=torch.bool)
    visual[4:10] = True
    out = slot_entropies(slots, visual, torch.ones(16, dtype=torch.bool), EST)
    assert out["visual"] == pytest.approx([0.0] * 3, abs=1e-6)  # one eigenvalue: zero entropy
    assert all(v > 0.5 for v in out["text"] + out["whole"])
    expected = EST.estimate(slots[:, ~visual]).h1.tolist()
    assert out["text"] == pytest.approx(expected)
    none_visual = slot_entropies(slots, torch.zeros(16, dtype=torch.bool), visual | ~visual, EST)
    assert all(math.isnan(v) for v in none_visual["visual"])


def test_collect_averages_inputs_and_matches_the_kl_probe(llava: Tiny) -> None:
    model: Any = llava.model
    adapter = get_adapter_for(model)
    a = llava.prompt([[5, "img", 7]], seed=1)
    b = llava.prompt([[9, "img", 3]], seed=2)
    both = collect_curves(model, adapter, [a, b], EST, progress=False)
    one = collect_curves(model, adapter, [a], EST, with_kl=False, progress=False)
    two = collect_curves(model, adapter, [b], EST, with_kl=False, progress=False)
    for group in ("whole", "visual", "text"):
        mean = [(x + y) / 2 for x, y in zip(getattr(one, group), getattr(two, group), strict=True)]
        assert getattr(both, group) == pytest.approx(mean)
    assert both.kl == pytest.approx(layer_redundancy_kl(model, adapter, [a, b]))
    assert one.kl is None
    assert both.visual_tokens == [llava.visual_per_image] * 2
    assert both.text_tokens == [12, 12]
    assert (both.n_inputs, both.num_layers) == (2, 6)


def test_collect_rejects_batches_and_prompts_without_images(llava: Tiny) -> None:
    model: Any = llava.model
    adapter = get_adapter_for(model)
    with pytest.raises(ValueError, match="batch size 2"):
        collect_curves(model, adapter, [llava.prompt([["img", 3], ["img", 3]])], EST)
    with pytest.raises(ValueError, match="input 0 has no visual tokens"):
        collect_curves(model, adapter, [llava.prompt([[8]])], EST, progress=False)
    with pytest.raises(ValueError, match="no inputs"):
        collect_curves(model, adapter, [], EST)


# --------------------------------------------------------------------------- report
def _report(llava: Tiny, *, kl: bool = True, whole: list[float] | None = None) -> ProfileReport:
    source = ModelSource("llava", llava.model, ToyProcessor("llava", 112, 64), "tiny-random", "t")
    whole = whole or [2.0, 2.1, 2.05, 1.5, 1.2, 1.3, 1.8]  # knee at slot 3, minimum at slot 4
    curves = ProfileCurves(
        whole=whole,
        visual=[w - 0.2 for w in whole],
        text=[math.nan, *whole[1:]],
        kl=[1e-5] * 6 if kl else None,
        visual_tokens=[64],
        text_tokens=[1],
    )
    return build_report(source, curves, prompt="q?", inputs=["a.png"], estimator="tme")


def test_report_json_round_trip_keeps_nan_as_null(llava: Tiny, tmp_path: Path) -> None:
    report = _report(llava)
    path = report.to_json(tmp_path / "p.json")
    raw = json.loads(path.read_text())
    assert raw["text"][0] is None
    assert raw["lifecycle"]["ivr_layer"] == report.lifecycle.ivr_layer
    again = ProfileReport.from_json(path)
    assert again == report
    assert math.isnan(again.curve("text")[0])
    assert (again.lifecycle.ivr_layer, again.lifecycle.ssr_layer) == (3, 4)
    assert again.lifecycle.ssr_mode == "freeze"
    assert again.model.num_layers == 6
    assert [p.name for p in tmp_path.iterdir()] == ["p.json"]


@pytest.mark.parametrize("kl", [True, False])
def test_plot_writes_a_png_and_no_temporary_file(llava: Tiny, tmp_path: Path, kl: bool) -> None:
    path = _report(llava, kl=kl).plot(tmp_path / "life.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        assert image.size[0] > 500
    assert [p.name for p in tmp_path.iterdir()] == ["life.png"]


def test_table_marks_the_suggested_layers(llava: Tiny) -> None:
    console = Console(record=True, width=160)
    _report(llava).render_table(console)
    text = console.export_text()
    assert "IVR layer" in text
    assert "SSR layer (freeze)" in text
    assert "suggested layers: IVR 3, SSR 4 (freeze)" in text


def test_suggested_config_replaces_layers_and_mode_keeps_ratios(llava: Tiny) -> None:
    report = _report(llava)
    base = PruningConfig(ivr_layer=1, ivr_keep=0.3, ssr_layer=5, ssr_mode="prune", ssr_keep=0.1)
    config = suggested_config(report, base)
    assert (config.ivr_layer, config.ssr_layer, config.ssr_mode) == (3, 4, "freeze")
    assert (config.ivr_keep, config.ssr_keep) == (0.3, 0.1)
    no_kl = suggested_config(_report(llava, kl=False), base)
    assert no_kl.ssr_mode == "prune"  # not probed: the base's mode
    default = suggested_config(report)
    assert default.ivr_keep == report.default_config.ivr_keep


def test_keep_ivr_keeps_the_base_ssr_layer_when_the_profiled_one_is_not_after_it(
    llava: Tiny,
) -> None:
    report = _report(llava)  # lifecycle: IVR 3, SSR 4 (freeze)
    base = PruningConfig(ivr_layer=4, ssr_layer=5, ssr_mode="prune", ssr_keep=0.05)
    config = suggested_config(report, base, keep_ivr=True)
    assert (config.ivr_layer, config.ssr_layer, config.ssr_mode) == (4, 5, "freeze")  # KL mode
    earlier = PruningConfig(ivr_layer=2, ssr_layer=5, ssr_mode="prune", ssr_keep=0.05)
    config = suggested_config(report, earlier, keep_ivr=True)
    assert (config.ivr_layer, config.ssr_layer) == (2, 4)  # the profiled SSR layer fits
    # the KL curve (1e-5 everywhere) then moves the freeze to just after the IVR layer
    frozen = suggested_config(report, base, keep_ivr=True, freeze_below=0.01)
    assert (frozen.ivr_layer, frozen.ssr_layer, frozen.ssr_mode) == (4, 5, "freeze")


def test_no_lifecycle_keeps_the_base_layers_and_says_so(
    llava: Tiny, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = _report(llava, whole=[1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.2])  # rises; last slot drops
    assert not report.lifecycle.detected
    base = PruningConfig(ivr_layer=1, ssr_layer=5, ssr_mode="prune", ssr_keep=0.05)
    config = suggested_config(report, base)
    assert (config.ivr_layer, config.ssr_layer, config.ssr_mode) == (1, 5, "freeze")  # KL mode
    console = Console(record=True, width=160)
    report.render_table(console)
    assert "no lifecycle detected" in console.export_text()
    assert report.plot(tmp_path / "p.png").is_file()
    profile = report.to_json(tmp_path / "profile.json")
    code = cli.main(["calibrate", "--profile", str(profile), "--out", str(tmp_path / "c.json")])
    assert code == 0
    assert "warning: no lifecycle detected" in capsys.readouterr().out
    default = halfv.load_config(tmp_path / "c.json")
    assert default.ivr_layer == report.default_config.ivr_layer


@pytest.mark.parametrize(
    ("content", "error", "needle"),
    [
        (None, FileNotFoundError, "does not exist"),
        ("{not json", ValueError, "is not JSON"),
        ('{"schema_version": 1, "oops": 2}', ValueError, "unknown key 'oops'"),
    ],
)
def test_from_json_errors(
    tmp_path: Path, content: str | None, error: type[Exception], needle: str
) -> None:
    path = tmp_path / "profile.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(error, match=needle):
        ProfileReport.from_json(path)


# --------------------------------------------------------------------------- inputs
@pytest.mark.parametrize(
    ("text", "raw", "expected"),
    [
        ("What is it?", False, ("", "What is it?")),
        ("Look: <image> What is it?", False, ("Look: ", " What is it?")),
        ("<image>\nCaption:", True, ("", "\nCaption:")),
    ],
)
def test_prompt_parse_splits_at_the_placeholder(
    text: str, raw: bool, expected: tuple[str, str]
) -> None:
    prompt = Prompt.parse(text, raw=raw)
    assert (prompt.before, prompt.after) == expected
    assert prompt.raw is raw


@pytest.mark.parametrize(
    ("text", "raw", "needle"),
    [
        ("Describe it.", True, "has no <image> placeholder"),
        ("<image> a <image> b", False, "2 <image> placeholders"),
        ("  <image> ", False, "has no text"),
        ("", True, "has no text"),
    ],
)
def test_prompt_parse_errors(text: str, raw: bool, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        Prompt.parse(text, raw=raw)


def test_find_and_load_images(tmp_path: Path, photos: list[Path]) -> None:
    folder = photos[0].parent
    (folder / "notes.txt").write_text("not an image")
    assert find_images(image_dir=folder) == sorted(photos)
    assert find_images(image_dir=folder, limit=1) == [folder / "cat.png"]
    assert find_images(images=photos[::-1]) == photos[::-1]
    assert load_image(photos[0]).mode == "RGB"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="contains no image files"):
        find_images(image_dir=empty)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_images(images=[tmp_path / "nope.png"])
    with pytest.raises(ValueError, match="--limit 0"):
        find_images(images=photos, limit=0)
    with pytest.raises(ValueError, match="--images PATH"):
        find_images()
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    with pytest.raises(ValueError, match=r"broken\.jpg' cannot be read as an image"):
        load_image(broken)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(photos[0].read_bytes()[:200])
    with pytest.raises(ValueError, match=r"truncated\.png"):
        load_image(truncated)


# --------------------------------------------------------------------------- sources
@pytest.mark.parametrize("family", ["llava", "qwen2_5_vl", "internvl"])
def test_tiny_sources_build_runnable_inputs(family: str) -> None:
    source = build_tiny(family, layers=2)
    image = Image.new("RGB", (50, 30), (200, 10, 10))
    inputs = source.builder(image, Prompt.parse("Hi <image> there?"))
    ids = inputs["input_ids"][0].tolist()
    visual = set(get_adapter_for(source.model).visual_token_ids(source.model))
    positions = [i for i, t in enumerate(ids) if t in visual]
    assert len(positions) == 576
    text = ToyProcessor.encode
    assert ids[: len(text("USER: Hi "))] == text("USER: Hi ")
    assert ids[-len(text(" there?\nASSISTANT:")) :] == text(" there?\nASSISTANT:")
    raw = source.builder(image, Prompt.parse("<image>ok", raw=True))["input_ids"][0].tolist()
    assert raw[-2:] == text("ok")
    assert raw[0] in visual or family != "llava"
    with torch.no_grad():
        logits = source.model(**inputs, logits_to_keep=1).logits
    assert logits.shape == (1, 1, 1024)
    assert source.builder.decode(text("héllo")) == "héllo"


class FakeTokenizer:
    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        return {"input_ids": [ord(c) for c in text]}


class FakeZooProcessor:
    """The public surface of halfv_lab.zoo's VQAProcessor that ZooInputBuilder uses."""

    tokenizer = FakeTokenizer()
    image_block: ClassVar[list[int]] = [900, 901, 901, 902]
    image_token_id = 901

    def __call__(self, image: Image.Image, question: str) -> dict[str, torch.Tensor]:
        ids = [1, *self.image_block, *(ord(c) for c in question), 2]
        return {
            "input_ids": torch.tensor([ids]),
            "attention_mask": torch.ones(1, len(ids), dtype=torch.long),
            "pixel_values": torch.zeros(1, 3, 4, 4),
            "mm_token_type_ids": torch.zeros(1, len(ids), dtype=torch.long),
        }

    def decode(self, ids: list[int]) -> str:
        return "".join(chr(i) for i in ids)


def test_zoo_builder_places_the_image_as_the_prompt_says() -> None:
    builder = ZooInputBuilder(FakeZooProcessor())
    image = Image.new("RGB", (8, 8))
    plain = builder(image, Prompt.parse("Q?"))["input_ids"][0].tolist()
    assert plain == [1, 900, 901, 901, 902, ord("Q"), ord("?"), 2]
    moved = builder(image, Prompt.parse("ab<image>Q?"))
    assert moved["input_ids"][0].tolist() == [1, 97, 98, 900, 901, 901, 902, ord("Q"), ord("?"), 2]
    assert moved["mm_token_type_ids"][0].tolist() == [0, 0, 0, 0, 1, 1, 0, 0, 0, 0]
    raw = builder(image, Prompt.parse("x<image>y", raw=True))["input_ids"][0].tolist()
    assert raw == [120, 900, 901, 901, 902, 121]
    assert builder.decode([104, 105]) == "hi"


def test_load_trained_source_explains_why_it_is_unavailable(
    monkeypatch: pytest.MonkeyPatch, llava: Tiny
) -> None:
    zoo = types.ModuleType("halfv_lab.zoo")
    monkeypatch.setitem(sys.modules, "halfv_lab.zoo", zoo)
    with pytest.raises(TrainedUnavailableError, match="load_trained is not available"):
        load_trained_source("llava")

    def missing(family: str) -> object:
        msg = f"no trained checkpoint for {family}"
        raise FileNotFoundError(msg)

    zoo.load_trained = missing  # type: ignore[attr-defined]
    with pytest.raises(TrainedUnavailableError, match="no trained checkpoint for llava"):
        load_trained_source("llava")
    zoo.load_trained = lambda family: "a string"  # type: ignore[attr-defined]
    with pytest.raises(TrainedUnavailableError, match="returned str"):
        load_trained_source("llava")
    zoo.load_trained = lambda family: (llava.model, FakeZooProcessor())  # type: ignore[attr-defined]
    source = load_trained_source("llava")
    assert (source.kind, source.model) == ("trained", llava.model)
    with pytest.raises(ValueError, match="unknown model family 'gpt'"):
        load_trained_source("gpt")


# --------------------------------------------------------------------------- CLI
def _one_error_line(capsys: pytest.CaptureFixture[str], code: int, needle: str) -> None:
    err = capsys.readouterr().err.strip().splitlines()
    assert code == USER_ERROR
    assert len(err) == 1, err
    assert err[0].startswith("halfv: error: ")
    assert needle in err[0]


def test_cli_profile_then_calibrate_then_apply(
    tmp_path: Path, photos: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "prof"
    code = cli.main(
        [
            "profile",
            "--model",
            "llava",
            "--images",
            *map(str, photos),
            "--prompt",
            "What is it?",
            "--layers",
            "6",
            "--out",
            str(out),
        ]
    )
    stdout = capsys.readouterr().out
    assert code == 0
    assert "suggested layers" in stdout
    report = ProfileReport.from_json(out / "profile.json")
    assert report.n_inputs == 2
    assert report.kl is not None
    assert len(report.whole) == 7
    assert (out / "lifecycle.png").read_bytes()[:4] == b"\x89PNG"
    config_path = tmp_path / "config.json"
    code = cli.main(
        ["calibrate", "--profile", str(out / "profile.json"), "--out", str(config_path)]
    )
    assert code == 0
    assert "wrote" in capsys.readouterr().out
    config = halfv.load_config(config_path)
    assert (config.ivr_layer, config.ssr_layer) == (
        report.lifecycle.ivr_layer,
        report.lifecycle.ssr_layer,
    )
    life = report.lifecycle
    assert config.ssr_mode == (life.ssr_mode if life.ssr_layer is not None else "none")
    source = build_tiny("llava", layers=6)
    inputs = source.builder(load_image(photos[0]), Prompt.parse("What is it?"))
    with halfv.apply(source.model, str(config_path)) as handle, torch.no_grad():
        source.model(**inputs, logits_to_keep=1)
        kept = handle.stats.kept_visual_per_layer() if handle.stats else []
    assert kept[config.ivr_layer - 1] == 576
    assert kept[config.ivr_layer] == kept_count(576, config.ivr_keep)
    code = cli.main(
        [
            "calibrate",
            "--profile",
            str(out / "profile.json"),
            "--out",
            str(config_path),
            "--drop",
            "0.99",
            "--tie",
            "0.5",
        ]
    )
    assert code == 0
    assert "IVR layer" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--images", "{tmp}/missing.png", "--prompt", "q"], "missing.png' does not exist"),
        (["--images", "{tmp}/bad.png", "--prompt", "q"], "bad.png' cannot be read as an image"),
        (["--image-dir", "{tmp}/empty", "--prompt", "q"], "contains no image files"),
        (["--images", "{photo}", "--raw-prompt", "Describe."], "has no <image> placeholder"),
        (["--images", "{photo}"], "a prompt is required"),
        (["--images", "{photo}", "--prompt", "q", "--estimator-options", '{"k": 0}'], "k=0"),
        (["--images", "{photo}", "--prompt", "q", "--estimator-options", "[1]"], "JSON object"),
        (["--images", "{photo}", "--prompt", "q", "--limit", "0"], "--limit 0"),
        (["--images", "{photo}", "--prompt", "q", "--drop", "2"], "drop=2.0"),
    ],
)
def test_cli_profile_bad_input_is_one_line_and_writes_nothing(
    tmp_path: Path,
    photos: list[Path],
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    needle: str,
) -> None:
    (tmp_path / "bad.png").write_bytes(b"garbage")
    (tmp_path / "empty").mkdir()
    args = [a.replace("{tmp}", str(tmp_path)).replace("{photo}", str(photos[0])) for a in args]
    out = tmp_path / "never"
    code = cli.main(["profile", "--layers", "2", "--out", str(out), *args])
    _one_error_line(capsys, code, needle)
    assert not out.exists()


@pytest.mark.parametrize(
    ("base", "needle"),
    [
        ('{"ivr_layer": 2, "colour": "red"}', "unknown key 'colour'"),
        ('{"ivr_keep": 1.5}', "ivr_keep=1.5: Input should be less than or equal to 1"),
        ("{oops", "is not valid JSON"),
    ],
)
def test_cli_calibrate_bad_base_config_is_one_line(
    llava: Tiny, tmp_path: Path, capsys: pytest.CaptureFixture[str], base: str, needle: str
) -> None:
    profile = _report(llava).to_json(tmp_path / "profile.json")
    (tmp_path / "base.json").write_text(base)
    out = tmp_path / "config.json"
    code = cli.main(
        [
            "calibrate",
            "--profile",
            str(profile),
            "--out",
            str(out),
            "--base-config",
            str(tmp_path / "base.json"),
        ]
    )
    _one_error_line(capsys, code, needle)
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--profile", "{tmp}/nope.json", "--out", "{tmp}/c.json"], "nope.json' does not exist"),
        (["--profile", "{tmp}/profile.json", "--out", "{tmp}/c.toml"], "ending in .json"),
        (
            ["--profile", "{tmp}/profile.json", "--out", "{tmp}/c.json", "--kl-threshold", "-1"],
            "threshold=-1.0",
        ),
        (
            ["--profile", "{tmp}/profile.json", "--out", "{tmp}/c.json", "--freeze-below", "-1"],
            "--freeze-below -1.0: use a positive KL value",
        ),
        (
            ["--profile", "{tmp}/no-kl.json", "--out", "{tmp}/c.json", "--freeze-below", "0.01"],
            "no KL curve: rerun halfv profile with --kl",
        ),
    ],
)
def test_cli_calibrate_other_errors(
    llava: Tiny, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], needle: str
) -> None:
    _report(llava).to_json(tmp_path / "profile.json")
    _report(llava, kl=False).to_json(tmp_path / "no-kl.json")
    code = cli.main(["calibrate", *(a.replace("{tmp}", str(tmp_path)) for a in args)])
    _one_error_line(capsys, code, needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["no-kl.json", "profile.json"]


def test_freeze_onset_is_where_the_kl_curve_stays_low() -> None:
    assert freeze_onset([9.0, 0.5, 0.2, 0.005, 0.002, 0.0], 0.01) == 3
    assert freeze_onset([9.0, 0.5, 0.002, 0.2, 0.002, 0.0], 0.01) == 4  # must *stay* low
    assert freeze_onset([9.0, 0.5, 0.2, 0.05, 0.02, 0.0], 0.01) is None
    assert freeze_onset([9.0, 1e-4, 1e-4, 1e-4, 1e-4, 0.0], 0.01) == 1
    assert freeze_onset([9.0, 1e-4, 1e-4, 1e-4, 1e-4, 0.0], 0.01, first=3) == 3
    with pytest.raises(ValueError, match="threshold=0"):
        freeze_onset([1.0, 0.0], 0)


PROFILES = Path(__file__).resolve().parents[2] / "docs" / "assets" / "profiles"
OLD_PROFILES = PROFILES / "zoo-2026-11-24"


def test_cli_calibrate_freeze_below_on_the_trained_profiles(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the first zoo LLaVA's KL falls below 0.01 from layer 24 on (docs/benchmarks.md, SSR
    # ablation; its profile is kept beside the SSR ablation it produced)
    llava = tmp_path / "llava.json"
    first = OLD_PROFILES / "trained-llava.json"
    args = ["calibrate", "--profile", str(first), "--out", str(llava)]
    assert cli.main([*args, "--freeze-below", "0.01"]) == 0
    assert "stays below it from layer 24" in capsys.readouterr().out
    config = load_config(llava)
    assert (config.ivr_layer, config.ssr_layer, config.ssr_mode) == (3, 24, "freeze")
    ablation = PROFILES.parent / "accuracy" / "llava-ssr" / "freeze24.json"
    assert config == load_config(ablation)
    # a model whose KL never falls that low (the first zoo Qwen2.5-VL stayed >= 0.03):
    # the flag leaves the schedule alone
    busy = json.loads(first.read_text())
    busy["kl"] = [max(0.03, value) for value in busy["kl"][:-1]] + busy["kl"][-1:]
    profile = tmp_path / "busy.json"
    profile.write_text(json.dumps(busy))
    outs = [tmp_path / "q1.json", tmp_path / "q2.json"]
    assert cli.main(["calibrate", "--profile", str(profile), "--out", str(outs[0])]) == 0
    flag = ["--freeze-below", "0.01"]
    assert cli.main(["calibrate", "--profile", str(profile), "--out", str(outs[1]), *flag]) == 0
    assert "no layer qualifies" in capsys.readouterr().out
    assert load_config(outs[0]) == load_config(outs[1])


def test_unsaturated_none_drops_the_ssr_stage_only_when_no_layer_qualifies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    busy = json.loads((OLD_PROFILES / "trained-llava.json").read_text())
    busy["kl"] = [max(0.03, value) for value in busy["kl"][:-1]] + busy["kl"][-1:]
    profile = tmp_path / "busy.json"
    profile.write_text(json.dumps(busy))
    out = tmp_path / "c.json"
    flags = ["--freeze-below", "0.01", "--unsaturated", "none"]
    assert cli.main(["calibrate", "--profile", str(profile), "--out", str(out), *flags]) == 0
    assert "--unsaturated none: no SSR stage" in capsys.readouterr().out
    config = load_config(out)
    assert (config.ssr_mode, config.ssr_layer) == ("none", None)
    # a profile with a qualifying layer freezes there, whatever --unsaturated says
    first = str(OLD_PROFILES / "trained-llava.json")
    assert cli.main(["calibrate", "--profile", first, "--out", str(out), *flags]) == 0
    assert (load_config(out).ssr_mode, load_config(out).ssr_layer) == ("freeze", 24)
    # without --freeze-below the flag means nothing: one clear error, no file
    other = tmp_path / "d.json"
    code = cli.main(["calibrate", "--profile", first, "--out", str(other), "--unsaturated", "none"])
    _one_error_line(capsys, code, "pass --freeze-below KL too")
    assert not other.exists()
