"""``halfv profile`` on the tiny random models of the issue-#20 families
(:mod:`halfv.profile.more_families`, :mod:`halfv.profile.grid_families`): each builds,
lays its image out as its processor does, prunes under its adapter, and profiles end to
end; the CLI accepts them, and ``halfv calibrate`` turns a profile of one into a config
that the model runs under."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

import halfv
from halfv.cli import main
from halfv.cli.profile_cmd import FAMILY_CHOICES
from halfv.profile import build_tiny, load_trained_source, profile_images
from halfv.profile.inputs import Prompt
from halfv.profile.more_families import MORE_FAMILIES
from halfv.profile.sources import FAMILIES, ToyProcessor, TrainedUnavailableError


@pytest.fixture(scope="module")
def image_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("img") / "red.png"
    Image.new("RGB", (60, 40), (200, 10, 10)).save(path)
    return path


@pytest.mark.parametrize("family", MORE_FAMILIES)
def test_more_family_profiles_end_to_end(family: str, image_path: Path) -> None:
    source = build_tiny(family, layers=3)
    adapter = halfv.get_adapter_for(source.model)
    assert source.family == family
    inputs = source.builder(Image.open(image_path), Prompt.parse("What is it?"))
    ids = inputs["input_ids"][0].tolist()
    text = ToyProcessor.encode
    assert ids[: len(text("USER: "))] == text("USER: ")
    assert ids[-len(text("What is it?\nASSISTANT:")) :] == text("What is it?\nASSISTANT:")
    visual = sum(t in adapter.visual_token_ids(source.model) for t in ids)
    assert f"{visual} visual tokens" in source.description
    with halfv.apply(source.model) as handle, torch.no_grad():
        source.model(**inputs)
        stats = handle.stats
    assert stats is not None
    assert len(stats.spans[0]) == 1  # one image, one span (Mistral3: across its row breaks)
    assert stats.span_sizes[0] == (visual,)
    report = profile_images(source, [image_path], "What is it?", with_kl=False, progress=False)
    assert report.num_layers == 3
    assert report.visual_tokens == [visual]


def test_cli_profiles_a_new_family(image_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "prof"
    argv = ["profile", "--model", "mistral3", "--images", str(image_path), "--prompt", "Hi?"]
    assert main([*argv, "--layers", "3", "--no-kl", "--quiet", "--out", str(out)]) == 0
    assert (out / "profile.json").is_file()


def test_no_trained_zoo_model_for_new_families() -> None:
    with pytest.raises(TrainedUnavailableError, match="no 'paligemma' model"):
        load_trained_source("paligemma")


def test_cli_offers_every_tiny_family() -> None:
    assert FAMILY_CHOICES == FAMILIES + MORE_FAMILIES


@pytest.mark.parametrize(("family", "kind"), [("gemma3", "sliding"), ("qwen3_5", "linear")])
def test_tiny_models_keep_their_family_layers(family: str, kind: str, image_path: Path) -> None:
    """Gemma 3's window is shorter than a prompt; Qwen3.5 mixes linear and full attention."""
    source = build_tiny(family, layers=6)
    specs = halfv.get_adapter_for(source.model).layer_specs(source.model)
    kinds = {spec.kind for spec in specs}
    assert kinds == {kind, "full"}
    inputs = source.builder(Image.open(image_path), Prompt.parse("What is it?"))
    windows = [spec.window for spec in specs if spec.kind == "sliding"]
    assert all(w is not None and w < inputs["input_ids"].shape[1] for w in windows)


def test_calibrate_a_new_family_profile(image_path: Path, tmp_path: Path) -> None:
    """profile -> calibrate -> the config runs the same tiny model (Gemma 3, 6 layers)."""
    out = tmp_path / "prof"
    argv = ["profile", "--model", "gemma3", "--images", str(image_path), "--prompt", "Hi?"]
    assert main([*argv, "--layers", "6", "--no-kl", "--quiet", "--out", str(out)]) == 0
    config = tmp_path / "config.json"
    argv = ["calibrate", "--profile", str(out / "profile.json"), "--out", str(config)]
    assert main(argv) == 0
    written = json.loads(config.read_text())
    profile = json.loads((out / "profile.json").read_text())
    assert profile["model"]["family"] == "gemma3"
    life = profile["lifecycle"]
    if life["ivr_layer"] is not None:
        assert written["ivr_layer"] == life["ivr_layer"]
    source = build_tiny("gemma3", layers=6)
    inputs = source.builder(Image.open(image_path), Prompt.parse("Hi?"))
    with halfv.apply(source.model, str(config)) as handle, torch.no_grad():
        source.model(**inputs)
        stats = handle.stats
    assert stats is not None
    assert stats.span_sizes[0] == (576,)
