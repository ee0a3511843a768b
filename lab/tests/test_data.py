"""Tests of halfv_lab.data: the synthetic VQA generator, easy-VQA loading and load_split."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from scipy import ndimage

from halfv_lab.data import (
    EASYVQA_ANSWERS,
    SYNTHETIC_ANSWERS,
    LazyVQA,
    VQAItem,
    answer_vocab,
    load_split,
)
from halfv_lab.data.synthetic import COLORS, GLYPHS, IMAGE_SIZE, SPLIT_SEEDS, TASKS, make_item

HAS_EASYVQA = importlib.util.find_spec("easy_vqa") is not None
needs_easyvqa = pytest.mark.skipif(
    not HAS_EASYVQA, reason="easy-VQA data not installed: pip install --no-deps easy-vqa"
)


@pytest.fixture(scope="module")
def synthetic_items() -> list[VQAItem]:
    return list(load_split("synthetic", "test", limit=80))


def _pixels(item: VQAItem) -> np.ndarray:
    return np.asarray(item.image, dtype=np.int16)


def test_synthetic_is_deterministic() -> None:
    for index in (0, 1, 2, 3, 57):
        a, b = make_item(123, index), make_item(123, index)
        assert (a.question, a.answer, a.task) == (b.question, b.answer, b.task)
        assert a.image.tobytes() == b.image.tobytes()
    assert make_item(123, 5).image.tobytes() != make_item(124, 5).image.tobytes()


def test_train_and_test_use_different_seeds() -> None:
    assert SPLIT_SEEDS["train"] != SPLIT_SEEDS["test"]
    train, test = (
        load_split("synthetic", "train", limit=8),
        load_split("synthetic", "test", limit=8),
    )
    assert all(a.image.tobytes() != b.image.tobytes() for a, b in zip(train, test, strict=True))


def test_synthetic_items_are_well_formed(synthetic_items: list[VQAItem]) -> None:
    assert [it.task for it in synthetic_items[:8]] == [*TASKS, *TASKS]
    vocab = set(SYNTHETIC_ANSWERS)
    for it in synthetic_items:
        assert it.image.size == (IMAGE_SIZE, IMAGE_SIZE)
        assert it.image.mode == "RGB"
        assert it.answer.lower() in vocab
        assert it.question.endswith("?")
        assert len(it.answer.split()) == 1


def test_count_answers_match_drawn_shapes(synthetic_items: list[VQAItem]) -> None:
    counts = [it for it in synthetic_items if it.task == "count"]
    assert counts
    for it in counts:
        shapes = it.meta["shapes"]
        target = it.meta["target"]
        assert target in it.question
        assert int(it.answer) == sum(s["shape"] == target for s in shapes)
        if it.meta["background"] == "uniform":  # count blobs in the pixels themselves
            px = _pixels(it)
            foreground = np.abs(px - px[0, 0]).sum(-1) > 30
            _, n_blobs = ndimage.label(foreground)
            assert n_blobs == len(shapes)


def test_color_and_position_answers_match_pixels(synthetic_items: list[VQAItem]) -> None:
    for it in synthetic_items:
        px = _pixels(it)
        for s in it.meta.get("shapes", []):
            cx, cy = s["center"]
            assert tuple(px[cy, cx]) == COLORS[s["color"]]  # the shape is drawn where recorded
        if it.task == "color":
            target = it.question.removeprefix("what color is the ").removesuffix("?")
            owners = [s for s in it.meta["shapes"] if s["shape"] == target]
            assert len(owners) == 1
            assert owners[0]["color"] == it.answer
        if it.task == "position":
            words = it.question.split()
            a, b = words[2], words[-2]
            xa = next(s["center"][0] for s in it.meta["shapes"] if s["color"] == a)
            xb = next(s["center"][0] for s in it.meta["shapes"] if s["color"] == b)
            assert it.answer == ("yes" if xa < xb else "no")
            assert abs(xa - xb) >= 16


def test_glyph_is_drawn_inside_its_box(synthetic_items: list[VQAItem]) -> None:
    glyphs = [it for it in synthetic_items if it.task == "glyph"]
    assert glyphs
    for it in glyphs:
        assert it.answer in GLYPHS
        assert it.answer == it.meta["glyph"]
        x0, y0, x1, y1 = it.meta["box"]
        inner = _pixels(it)[y0 + 3 : y1 - 2, x0 + 3 : x1 - 2]
        dark = (inner.sum(-1) < 200).sum()
        assert 10 < dark < inner.shape[0] * inner.shape[1] // 2


def test_lazy_sequence_behaviour() -> None:
    data = load_split("synthetic", "test", limit=5)
    assert isinstance(data, LazyVQA)
    assert len(data) == 5
    assert data[-1].question == data[4].question
    assert [it.question for it in data[1:3]] == [data[1].question, data[2].question]
    with pytest.raises(IndexError, match="out of range"):
        data[5]
    assert len(load_split("synthetic", "train")) == 50_000
    assert len(load_split("synthetic", "test", limit=0)) == 0


def test_load_split_rejects_bad_names() -> None:
    with pytest.raises(ValueError, match="unknown dataset 'coco'"):
        load_split("coco", "train")
    with pytest.raises(ValueError, match="'train' or 'test'"):
        load_split("synthetic", "val")
    with pytest.raises(ValueError, match="limit"):
        load_split("synthetic", "train", limit=-1)
    assert answer_vocab("easyvqa") == EASYVQA_ANSWERS
    assert len(SYNTHETIC_ANSWERS) == len(set(SYNTHETIC_ANSWERS)) == 20


@needs_easyvqa
def test_easyvqa_loads() -> None:
    train, test = load_split("easyvqa", "train"), load_split("easyvqa", "test")
    assert (len(train), len(test)) == (38_575, 9_673)
    head = load_split("easyvqa", "test", limit=30)
    assert len(head) == 30
    assert head[0].question == test[0].question  # fixed order
    for it in head:
        assert it.image.size == (64, 64)
        assert it.image.mode == "RGB"
        assert it.answer in EASYVQA_ANSWERS
        assert it.task == "easyvqa"
    assert len({it.meta["path"] for it in head}) > 10  # shuffled: many different images


@needs_easyvqa
def test_easyvqa_rejects_bad_split() -> None:
    with pytest.raises(ValueError, match="'train' or 'test'"):
        load_split("easyvqa", "validation")


@needs_easyvqa
def test_image_shapes_name_each_image_once_and_agree_with_every_question() -> None:
    from halfv_lab.data.easyvqa import image_shapes

    shapes = image_shapes("test")
    assert len(shapes) == 763  # test images with a shape question
    assert set(shapes.values()) == set(EASYVQA_ANSWERS[:3])
    for it in load_split("easyvqa", "test"):
        if it.answer in EASYVQA_ANSWERS[:3]:
            assert shapes[it.meta["path"]] == it.answer
    assert len(image_shapes("train")) == 3_107
    with pytest.raises(ValueError, match="'train' or 'test'"):
        image_shapes("val")
