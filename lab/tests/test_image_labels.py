"""Per-image labels (halfv_lab.data.image_labels) and the pooled heads that learn them."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from halfv_lab.data import VQAItem, load_split
from halfv_lab.data.image_labels import LABEL_HEADS, MIN_GAP_PX, UNKNOWN, label_row
from halfv_lab.data.synthetic import COLORS, make_item
from halfv_lab.zoo.label_heads import ImageLabelHeads, load_label_heads, save_label_heads

HAS_EASYVQA = importlib.util.find_spec("easy_vqa") is not None
needs_easyvqa = pytest.mark.skipif(
    not HAS_EASYVQA, reason="easy-VQA data not installed: pip install --no-deps easy-vqa"
)
HEAD = {h.name: j for j, h in enumerate(LABEL_HEADS)}


def _label(row: list[int], head: str) -> str | None:
    value = row[HEAD[head]]
    return None if value == UNKNOWN else LABEL_HEADS[HEAD[head]].classes[value]


def test_synthetic_labels_answer_the_generators_questions() -> None:
    """Each synthetic question is answered the same way by the image's labels."""
    for index in range(80):
        item = make_item(11, index)
        row = label_row(item)
        assert row[HEAD["easyvqa/shape"]] == row[HEAD["easyvqa/colour"]] == UNKNOWN
        words = item.question.rstrip("?").split()
        if item.task == "count":  # "how many circles are there?"
            kind = words[2].removesuffix("s")
            assert _label(row, f"count/{kind}") == item.answer
        elif item.task == "color":  # "what color is the triangle?"
            assert _label(row, f"colour-of/{words[-1]}") == item.answer
        elif item.task == "glyph":
            assert _label(row, "glyph") == item.answer.lower()
        else:  # "is the red shape left of the blue shape?" (the generator keeps 16 px apart)
            a, b = words[2], words[7]
            first, second = sorted((a, b), key=list(COLORS).index)
            said = _label(row, f"left/{first}-{second}")
            assert said is not None
            assert (said == "yes") == ((item.answer == "yes") == (first == a))
        assert _label(row, "glyph") == ("none" if item.task != "glyph" else item.answer.lower())


def test_left_labels_need_a_clear_gap_and_single_colours() -> None:
    shape = {"shape": "circle", "radius": 12}
    scene = [
        {**shape, "color": "red", "center": (50, 50)},
        {**shape, "color": "blue", "center": (50 + MIN_GAP_PX - 1, 90)},
        {**shape, "color": "green", "center": (150, 60)},
        {**shape, "color": "green", "center": (10, 60)},
        {**shape, "color": "yellow", "center": (200, 30)},
    ]
    row = label_row(VQAItem(None, "q", "a", "count", {"shapes": scene}))  # type: ignore[arg-type]
    assert _label(row, "left/red-blue") is None  # too close to tell
    assert _label(row, "left/red-green") is None  # two green shapes
    assert _label(row, "left/red-yellow") == "yes"
    assert _label(row, "left/blue-yellow") == "yes"
    assert _label(row, "has/purple") == "no"
    assert _label(row, "count/circle") == "5"
    assert _label(row, "colour-of/circle") is None  # five circles: no single colour
    assert _label(row, "colour-of/square") == "none"


def test_text_only_items_have_no_labels() -> None:
    item = VQAItem(None, "q", "a", "other")  # type: ignore[arg-type]
    assert label_row(item) == [UNKNOWN] * len(LABEL_HEADS)


@needs_easyvqa
def test_easyvqa_labels_agree_with_every_question() -> None:
    """No question of an image contradicts its shape and colour labels."""
    items = list(load_split("easyvqa", "train", limit=3000))
    labelled = 0
    for item in items:
        row = label_row(item)
        shape, colour = _label(row, "easyvqa/shape"), _label(row, "easyvqa/colour")
        labelled += shape is not None and colour is not None
        words = item.question.rstrip("?").split()
        named = [w for w in words if w in (*LABEL_HEADS[0].classes, *LABEL_HEADS[1].classes)]
        if item.answer in LABEL_HEADS[0].classes:
            assert item.answer == shape
        elif item.answer in LABEL_HEADS[1].classes:
            assert item.answer == colour
        else:
            negated = "not" in words or words[:2] == ["is", "no"]
            present = (item.answer == "yes") != negated
            for word in named:  # present words are the image's; absent ones are not
                assert (word in (shape, colour)) == present, (item.question, item.answer)
    assert labelled > 0.9 * len(items)


@needs_easyvqa
def test_easyvqa_labels_do_not_depend_on_where_the_data_is_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The split comes from the data's own folders, not from words in the install path."""
    from halfv_lab.data import easyvqa

    linked = tmp_path / "test" / "site" / "data"  # an install path with a "test" folder
    linked.parent.mkdir(parents=True)
    linked.symlink_to(easyvqa.easyvqa_dir(), target_is_directory=True)
    monkeypatch.setattr(easyvqa, "easyvqa_dir", lambda: linked)
    caches = (easyvqa._questions, easyvqa.image_attributes)
    for cached in caches:
        cached.cache_clear()
    try:
        items = list(easyvqa.load_easyvqa("train", limit=50))
        assert all(str(it.meta["path"]).startswith(str(linked)) for it in items)
        shapes = [_label(label_row(it), "easyvqa/shape") for it in items]
        assert sum(s is not None for s in shapes) > 40
    finally:
        for cached in caches:
            cached.cache_clear()


def test_heads_loss_ignores_unknown_labels_and_learns() -> None:
    torch.manual_seed(0)
    heads = ImageLabelHeads(32, attention_heads=4, queries=2)
    visual = torch.randn(6, 10, 32)
    targets = torch.full((6, len(LABEL_HEADS)), UNKNOWN)
    targets[:, HEAD["glyph"]] = torch.tensor([0, 1, 2, 3, 4, 5])
    loss = heads.loss(visual, targets)
    # only the glyph head has labels: the loss is its cross-entropy alone
    glyph = heads(visual)[HEAD["glyph"]]
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(glyph, targets[:, -1]))
    opt = torch.optim.Adam(heads.parameters(), lr=1e-2)
    for _ in range(60):
        opt.zero_grad()
        heads.loss(visual, targets).backward()  # type: ignore[no-untyped-call]
        opt.step()
    counts = heads.correct(visual, targets)
    assert counts[HEAD["glyph"]].tolist() == [6, 6]
    assert counts[HEAD["easyvqa/shape"]].tolist() == [0, 0]


def test_heads_loss_with_no_labels_is_zero_not_nan() -> None:
    heads = ImageLabelHeads(16, attention_heads=2, queries=1)
    targets = torch.full((3, len(LABEL_HEADS)), UNKNOWN)
    assert heads.loss(torch.randn(3, 4, 16), targets).item() == 0.0


def test_heads_under_bf16_autocast_stay_float32() -> None:
    heads = ImageLabelHeads(16, attention_heads=2, queries=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = heads(torch.randn(2, 4, 16, dtype=torch.bfloat16))
    assert {t.dtype for t in logits} == {torch.float32}
    assert [t.shape[1] for t in logits] == [len(h.classes) for h in LABEL_HEADS]


def test_saved_heads_round_trip_and_refuse_other_heads(tmp_path: Path) -> None:
    torch.manual_seed(1)
    heads = ImageLabelHeads(16, attention_heads=2, queries=1)
    save_label_heads(heads, tmp_path)
    fresh = ImageLabelHeads(16, attention_heads=2, queries=1)
    assert load_label_heads(fresh, tmp_path)
    for a, b in zip(heads.parameters(), fresh.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    other = ImageLabelHeads(16, LABEL_HEADS[:3], attention_heads=2, queries=1)
    assert not load_label_heads(other, tmp_path)
    assert not load_label_heads(fresh, tmp_path / "missing")


def test_label_rows_are_deterministic() -> None:
    rows = [label_row(it) for it in load_split("synthetic", "test", limit=12)]
    again = [label_row(it) for it in load_split("synthetic", "test", limit=12)]
    assert rows == again
    assert np.array(rows).shape == (12, len(LABEL_HEADS))
