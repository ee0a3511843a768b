"""Tests of halfv_lab.zoo.answer_probe: vocabulary, learning, autocast, the projector tap, I/O.

All fast and SmolLM2-free: the probe is built over a small random embedding table.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from halfv_lab.data import load_split
from halfv_lab.zoo.answer_probe import (
    PROBE_NAME,
    AnswerProbe,
    ProjectorTap,
    load_probe,
    probe_vocab,
    save_probe,
)
from halfv_lab.zoo.evaluate import normalize_answer
from halfv_lab.zoo.training import TrainConfig

HAS_EASYVQA = importlib.util.find_spec("easy_vqa") is not None

DIM = 32
TOKENS = 16
QUESTION_IDS = (31, 32, 33, 34)
WHERE = {31: 2, 32: 7, 33: 11, 34: 14}
"""Question token id -> the visual token whose feature 0 decides the answer."""


def _probe(answers: tuple[str, ...] = ("red", "blue"), seed: int = 0) -> AnswerProbe:
    torch.manual_seed(seed)
    return AnswerProbe(torch.randn(50, DIM), answers, heads=4, queries=2)


# ----------------------------------------------------------------------------- vocabulary


def test_probe_vocab_holds_normalised_answers_once() -> None:
    vocab = probe_vocab(["easyvqa", "synthetic"])
    assert len(vocab) == len(set(vocab))
    assert {"yes", "no", "circle", "red", "3", "m", "x"} <= set(vocab)
    assert all(a == normalize_answer(a) for a in vocab)  # e.g. glyph "M" -> "m"
    assert probe_vocab(["synthetic", "synthetic"]) == probe_vocab(["synthetic"])


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(
            "easyvqa",
            marks=pytest.mark.skipif(
                not HAS_EASYVQA, reason="easy-VQA not installed: pip install --no-deps easy-vqa"
            ),
        ),
        "synthetic",
    ],
)
def test_probe_vocab_covers_the_training_answers(name: str) -> None:
    vocab = set(probe_vocab(["easyvqa", "synthetic"]))
    answers = {normalize_answer(it.answer) for it in load_split(name, "train", limit=300)}
    assert answers, name
    assert answers <= vocab, sorted(answers - vocab)


def test_targets_map_answers_to_indices_and_unknown_to_ignore() -> None:
    probe = _probe(("red", "blue", "3"))
    targets = probe.targets(["blue", "Red.", "3", "purple", ""], torch.device("cpu"))
    assert targets.dtype == torch.long
    assert targets.tolist() == [1, 0, 2, -100, -100]


# ----------------------------------------------------------------------------- learning


def _task(
    n: int, code: torch.Tensor, *, zero_visual: bool, fixed_question: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Visual tokens, question ids, mask and labels of a task that needs attention.

    Every token carries a fixed position code and a random +-2 in feature 0; the answer
    is that feature's sign in the one token the question id points to.
    """
    q = torch.tensor(QUESTION_IDS)[torch.randint(len(QUESTION_IDS), (n,))]
    sign = torch.randint(0, 2, (n, TOKENS)) * 2 - 1
    visual = code + 0.3 * torch.randn(n, TOKENS, DIM)
    visual[:, :, 0] = 2.0 * sign
    where = torch.tensor([WHERE[int(x)] for x in q])
    labels = (sign[torch.arange(n), where] < 0).long()  # "red" for +, "blue" for -
    shown = torch.full_like(q, QUESTION_IDS[0]) if fixed_question else q
    ids = torch.stack([torch.full((n,), 20), shown, torch.full((n,), 21)], 1)
    mask = torch.ones_like(ids, dtype=torch.bool)
    if zero_visual:
        visual = torch.zeros_like(visual)
    return visual, ids, mask, labels


def _train_and_score(*, zero_visual: bool = False, fixed_question: bool = False) -> float:
    probe = _probe()
    code = torch.randn(TOKENS, DIM)
    code[:, 0] = 0.0
    opt = torch.optim.Adam(probe.parameters(), lr=3e-3)
    for _ in range(200):
        visual, ids, mask, labels = _task(
            64, code, zero_visual=zero_visual, fixed_question=fixed_question
        )
        loss = F.cross_entropy(probe(visual, ids, mask), labels)
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
    visual, ids, mask, labels = _task(
        1024, code, zero_visual=zero_visual, fixed_question=fixed_question
    )
    with torch.no_grad():
        return float((probe(visual, ids, mask).argmax(1) == labels).float().mean())


def test_probe_learns_a_question_dependent_lookup() -> None:
    assert _train_and_score() >= 0.95


@pytest.mark.parametrize(
    "control",
    [{"zero_visual": True}, {"fixed_question": True}],
    ids=["visual-zeroed", "question-hidden"],
)
def test_probe_cannot_learn_the_lookup_without_its_inputs(control: dict[str, bool]) -> None:
    # chance is 0.5; reading all four candidate tokens without the question gives ~0.69
    assert _train_and_score(**control) < 0.8


def test_question_vector_depends_on_word_order() -> None:
    probe = _probe()
    ids = torch.tensor([[3, 17, 42, 8], [8, 42, 17, 3]])
    mask = torch.ones_like(ids, dtype=torch.bool)
    with torch.no_grad():
        vectors = probe.encode_questions(ids, mask)
    assert vectors.shape == (2, DIM)
    assert not torch.allclose(vectors[0], vectors[1], atol=1e-4)


def test_question_vector_ignores_padding() -> None:
    probe = _probe()
    ids = torch.tensor([[3, 17, 0, 0], [3, 17, 9, 9]])
    mask = torch.tensor([[True, True, False, False], [True, True, False, False]])
    with torch.no_grad():
        vectors = probe.encode_questions(ids, mask)
    torch.testing.assert_close(vectors[0], vectors[1])


@pytest.mark.parametrize("visual_dtype", [torch.float32, torch.bfloat16])
def test_forward_under_bf16_autocast_stays_float32(visual_dtype: torch.dtype) -> None:
    probe = _probe()
    visual = torch.randn(3, TOKENS, DIM).to(visual_dtype)
    ids = torch.randint(0, 50, (3, 5))
    mask = torch.ones_like(ids, dtype=torch.bool)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert nn.Linear(DIM, 2)(torch.randn(1, DIM)).dtype == torch.bfloat16  # autocast is on
        logits = probe(visual, ids, mask)
    assert logits.shape == (3, 2)
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


# ----------------------------------------------------------------------------- projector tap


class _Projector(nn.Module):
    def __init__(self, as_tuple: bool) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 8)
        self.as_tuple = as_tuple

    def forward(self, x: torch.Tensor) -> Any:
        y = self.linear(x)
        return (y, None) if self.as_tuple else y


class _Inner(nn.Module):
    def __init__(self, as_tuple: bool) -> None:
        super().__init__()
        self.multi_modal_projector = _Projector(as_tuple)


class _TinyVLM(nn.Module):
    """Has ``model.multi_modal_projector``, which maps flat ``[images*tokens, 4]`` rows."""

    def __init__(self, as_tuple: bool = False) -> None:
        super().__init__()
        self.model = _Inner(as_tuple)

    def forward(self, flat: torch.Tensor) -> torch.Tensor:
        out = self.model.multi_modal_projector(flat)
        features: torch.Tensor = out[0] if isinstance(out, tuple) else out
        return features


@pytest.mark.parametrize("as_tuple", [False, True], ids=["tensor", "tuple"])
def test_projector_tap_captures_and_reshapes(as_tuple: bool) -> None:
    model = _TinyVLM(as_tuple)
    projector = model.model.multi_modal_projector
    flat = torch.randn(2 * 3, 4)
    with ProjectorTap(model, "llava") as tap:  # type: ignore[arg-type]
        assert tap.module is projector
        assert len(projector._forward_hooks) == 1
        expected = model(flat)
        features = tap.take(2)
        assert features.shape == (2, 3, 8)
        torch.testing.assert_close(features, expected.reshape(2, 3, 8))
        assert tap.output is None  # take clears the capture
        with pytest.raises(RuntimeError, match="projector did not run"):
            tap.take(2)
    assert len(projector._forward_hooks) == 0
    assert tap.output is None


def test_projector_tap_without_forward_raises_and_unhooks_on_error() -> None:
    model = _TinyVLM()
    projector = model.model.multi_modal_projector
    tap = ProjectorTap(model, "internvl")  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="was an image given"), tap:
        tap.take(1)
    assert len(projector._forward_hooks) == 0


def test_projector_tap_rejects_unknown_family() -> None:
    with pytest.raises(ValueError, match="llava, internvl, qwen2_5_vl") as err:
        ProjectorTap(_TinyVLM(), "blip")  # type: ignore[arg-type]
    assert "'blip'" in str(err.value)


# ----------------------------------------------------------------------------- save / load


def test_save_and_load_probe_round_trip(tmp_path: Path) -> None:
    saved = _probe(seed=0)
    path = save_probe(saved, tmp_path)
    assert path == tmp_path / PROBE_NAME
    assert path.is_file()
    loaded = _probe(seed=1)
    assert not torch.equal(loaded.positions, saved.positions)
    assert load_probe(loaded, tmp_path)
    a, b = saved.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    for key, value in a.items():
        assert torch.equal(b[key], value), key


def test_load_probe_refuses_a_missing_file_or_other_answers(tmp_path: Path) -> None:
    probe = _probe(seed=1)
    before = {k: v.clone() for k, v in probe.state_dict().items()}
    assert not load_probe(probe, tmp_path)
    save_probe(_probe(("red", "green"), seed=0), tmp_path)
    assert not load_probe(probe, tmp_path)
    for key, value in probe.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_train_config_rejects_a_negative_probe_weight() -> None:
    with pytest.raises(ValueError, match="probe_weight"):
        TrainConfig(family="llava", probe_weight=-1)
    assert TrainConfig(family="llava", device="cpu", probe_weight=0.5).probe_weight == 0.5


class _WordTokenizer:
    """Batched like a transformers tokenizer: one id per space-separated word."""

    def __call__(self, texts: list[str], add_special_tokens: bool) -> dict[str, list[list[int]]]:
        assert isinstance(texts, list)
        assert not add_special_tokens
        return {"input_ids": [[len(w) for w in t.split()] for t in texts]}


def test_tokenize_right_pads_cuts_and_masks() -> None:
    probe = AnswerProbe(torch.randn(50, DIM), ("red",), heads=4, max_question_tokens=3)
    ids, mask = probe.tokenize(  # type: ignore[arg-type]
        _WordTokenizer(), ["a bb", "ccc dddd eeeee ffffff", ""], torch.device("cpu")
    )
    assert ids.tolist() == [[1, 2, 0], [3, 4, 5], [0, 0, 0]]
    assert mask.tolist() == [[True, True, False], [True, True, True], [False, False, False]]
    with pytest.raises(ValueError, match="at least one"):
        probe.tokenize(_WordTokenizer(), [], torch.device("cpu"))  # type: ignore[arg-type]
