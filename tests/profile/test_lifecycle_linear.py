"""The lifecycle's layers on a model with linear-attention layers (Qwen3.5): only layers
whose scoring layer is an attention layer are suggested, in the profile, in a re-detecting
``halfv calibrate``, and the calibrated config runs the model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

import halfv
from halfv.cli import main
from halfv.interfaces import LayerSpec
from halfv.profile import build_tiny
from halfv.profile.inputs import Prompt
from halfv.profile.lifecycle import detect_lifecycle
from halfv.runtime.layer_kinds import valid_scored_layers

LINEAR_DESCENT = [-float(i) for i in range(9)]  # 8 layers: knee at slot 1, minimum at 7


def test_ivr_moves_to_the_first_allowed_layer_and_ssr_to_the_nearest() -> None:
    plain = detect_lifecycle(LINEAR_DESCENT)
    assert (plain.ivr_layer, plain.ssr_layer) == (1, 7)
    life = detect_lifecycle(LINEAR_DESCENT, scored_layers=[2, 4, 6])
    assert (life.ivr_layer, life.ssr_layer) == (2, 6)
    assert (life.knee_slot, life.min_slot) == (1, 7)
    assert "first layer from there on whose scoring layer" in life.rule
    assert "nearest whose scoring layer" in life.rule
    assert life.stage_bounds == ((0, 1), (2, 5), (6, 8))
    unmoved = detect_lifecycle(LINEAR_DESCENT, scored_layers=[1, 7])
    assert (unmoved.ivr_layer, unmoved.ssr_layer) == (1, 7)
    assert "scoring layer" not in unmoved.rule


def test_no_allowed_layer_after_the_knee_or_the_ivr() -> None:
    assert detect_lifecycle(LINEAR_DESCENT, scored_layers=[]).ivr_layer is None
    life = detect_lifecycle(LINEAR_DESCENT, scored_layers=[6])
    assert (life.ivr_layer, life.ssr_layer) == (6, None)
    assert "no layer after IVR layer 6 prunes after an attention layer" in life.rule


@given(
    st.lists(st.floats(-1e3, 1e3), min_size=3, max_size=20),
    st.lists(st.sampled_from(["linear", "full"]), min_size=19, max_size=19),
)
def test_suggested_layers_are_always_allowed(curve: list[float], kinds: list[str]) -> None:
    specs = [LayerSpec(kind=k) for k in kinds[: len(curve) - 1]]  # type: ignore[arg-type]
    allowed = valid_scored_layers(specs)
    life = detect_lifecycle(curve, scored_layers=allowed)
    plain = detect_lifecycle(curve)
    if life.ivr_layer is None:
        assert plain.ivr_layer is None or all(x < plain.ivr_layer for x in allowed)
        return
    assert life.ivr_layer in allowed
    assert plain.ivr_layer is not None
    assert life.ivr_layer >= plain.ivr_layer
    if life.ssr_layer is not None:
        assert life.ssr_layer in allowed
        assert life.ivr_layer < life.ssr_layer
    starts = [b[0] for b in life.stage_bounds]
    assert starts[0] == 0
    assert life.stage_bounds[-1][1] == len(curve) - 1


@pytest.fixture(scope="module")
def image_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("img") / "red.png"
    Image.new("RGB", (60, 40), (200, 10, 10)).save(path)
    return path


def test_profile_calibrate_apply_on_qwen3_5(image_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "prof"
    argv = ["profile", "--model", "qwen3_5", "--images", str(image_path), "--prompt", "Hi?"]
    assert main([*argv, "--layers", "8", "--no-kl", "--quiet", "--out", str(out)]) == 0
    profile = json.loads((out / "profile.json").read_text())
    assert profile["model"]["scored_layers"] == [2, 4, 6]  # layers 1, 3, 5 attend
    source = build_tiny("qwen3_5", layers=8)
    inputs = source.builder(Image.open(image_path), Prompt.parse("Hi?"))
    for extra in ([], ["--drop", "0.05"]):  # as profiled, and re-detected
        config = tmp_path / f"config{len(extra)}.json"
        argv = ["calibrate", "--profile", str(out / "profile.json"), "--out", str(config)]
        assert main([*argv, *extra]) == 0
        written = json.loads(config.read_text())
        assert written["ivr_layer"] in (2, 4, 6)
        assert written["ssr_layer"] is None or written["ssr_layer"] in (4, 6)
        with halfv.apply(source.model, str(config)) as handle, torch.no_grad():
            source.model(**inputs)
            assert handle.stats is not None
