"""``halfv profile`` on the tiny random models of the issue-#20 families
(:mod:`halfv.profile.more_families`): each builds, lays its image out as its processor
does, prunes under its adapter, and profiles end to end; the CLI accepts them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

import halfv
from halfv.cli import main
from halfv.profile import build_tiny, load_trained_source, profile_images
from halfv.profile.inputs import Prompt
from halfv.profile.more_families import MORE_FAMILIES
from halfv.profile.sources import ToyProcessor, TrainedUnavailableError


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
