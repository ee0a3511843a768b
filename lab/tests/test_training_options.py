"""Checks of ``TrainConfig`` and ``--init-from`` that fail before any model is built."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from halfv_lab.zoo.checkpoint import WEIGHTS_NAME
from halfv_lab.zoo.families import VisionSize
from halfv_lab.zoo.training import TrainConfig, train


def _fake_checkpoint(folder: Path, *, family: str = "llava", rank: int = 8) -> Path:
    folder.mkdir()
    (folder / WEIGHTS_NAME).write_bytes(b"")
    config = {"family": family, "vision": VisionSize().to_dict(), "lora": {"rank": rank}}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_vision_only_needs_an_aid() -> None:
    with pytest.raises(ValueError, match="probe_weight > 0 or label_weight > 0"):
        TrainConfig(family="llava", device="cpu", vision_only=True)
    TrainConfig(family="llava", device="cpu", vision_only=True, label_weight=1.0)


@pytest.mark.parametrize("name", ["probe_weight", "label_weight", "label_eval_limit"])
def test_negative_aid_settings_are_named(name: str) -> None:
    with pytest.raises(ValueError, match=f"{name} must be >= 0"):
        TrainConfig(family="llava", device="cpu", **{name: -1})


def test_init_from_without_weights_is_named(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    cfg = TrainConfig(family="llava", device="cpu", init_from=str(empty))
    with pytest.raises(FileNotFoundError, match=r"holds no weights\.safetensors"):
        train(cfg)


@pytest.mark.parametrize(
    ("family", "rank", "lora_rank"),
    [("internvl", 8, 8), ("llava", 8, 0), ("llava", 0, 8)],
)
def test_init_from_another_build_is_refused(
    tmp_path: Path, family: str, rank: int, lora_rank: int
) -> None:
    folder = _fake_checkpoint(tmp_path / "ckpt", family=family, rank=rank)
    cfg = TrainConfig(family="llava", device="cpu", lora_rank=lora_rank, init_from=str(folder))
    with pytest.raises(ValueError, match="pass the same --family, --vision-\\* and --lora-rank"):
        train(cfg)


@pytest.mark.parametrize(("bank", "limit"), [(False, 8), (True, 0)])
def test_bank_limit_needs_a_bank_and_a_positive_count(bank: bool, limit: int) -> None:
    with pytest.raises(ValueError, match=f"bank_limit={limit} needs bank=True"):
        TrainConfig(family="llava", device="cpu", bank=bank, bank_limit=limit)
