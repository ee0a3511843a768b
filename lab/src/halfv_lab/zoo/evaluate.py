"""Greedy VQA answering and accuracy for the zoo models.

:func:`answer_questions` only calls ``model.generate``, so it works unchanged inside a
``with halfv.apply(model, cfg):`` block (the pruning hooks see ordinary generate calls).
"""

from __future__ import annotations

import logging
import string
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any, Protocol

import torch

from halfv_lab.data import load_split
from halfv_lab.zoo.processing import VQAProcessor

if TYPE_CHECKING:
    from PIL import Image
    from transformers import PreTrainedModel

__all__ = [
    "QAItem",
    "accuracy",
    "answer_questions",
    "autocast_bf16",
    "evaluate_all",
    "normalize_answer",
]

log = logging.getLogger(__name__)

_PUNCT = str.maketrans("", "", string.punctuation)


class QAItem(Protocol):
    """What evaluation reads from an item (:class:`halfv_lab.data.VQAItem` satisfies it)."""

    @property
    def image(self) -> Image.Image:
        """The image."""
        ...

    @property
    def question(self) -> str:
        """The question."""
        ...

    @property
    def answer(self) -> str:
        """The reference answer."""
        ...


def normalize_answer(text: str) -> str:
    """Lowercase, drop punctuation, keep the first word (``"Red."`` -> ``"red"``)."""
    words = text.lower().translate(_PUNCT).split()
    return words[0] if words else ""


def _model_device_dtype(model: PreTrainedModel) -> tuple[torch.device, torch.dtype]:
    param = next(model.parameters())
    return param.device, param.dtype


@torch.no_grad()
def answer_questions(  # noqa: PLR0917 -- the zoo's documented positional API
    model: PreTrainedModel,
    processor: VQAProcessor,
    items: Sequence[QAItem],
    batch_size: int = 16,
    max_new_tokens: int = 4,
    device: torch.device | str | None = None,
) -> list[str]:
    """Answer every item with greedy decoding, in left-padded batches.

    Args:
        model: a zoo VLM (or any model that accepts the processor's batches).
        processor: the processor built with the model.
        items: objects with ``image`` and ``question`` (``answer`` is not read here).
        batch_size: items per ``generate`` call.
        max_new_tokens: generation length; answers are single words.
        device: where inputs go (default: the model's device).

    Returns:
        The decoded answers (special tokens removed, whitespace stripped), in item order.
    """
    if batch_size < 1:
        msg = f"batch_size must be >= 1, got {batch_size}"
        raise ValueError(msg)
    vlm: Any = model  # transformers' annotations do not type-check generate()
    model_device, model_dtype = _model_device_dtype(model)
    target = torch.device(device) if device is not None else model_device
    answers: list[str] = []
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        batch = processor(
            [it.image for it in chunk],
            [it.question for it in chunk],
            device=target,
            dtype=model_dtype,
        )
        out = vlm.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=processor.eos_token_id,
            pad_token_id=processor.pad_token_id,
        )
        prompt_len = batch["input_ids"].shape[1]
        answers += [processor.decode(row) for row in out[:, prompt_len:]]
    return answers


def accuracy(preds: Sequence[str], items: Sequence[QAItem]) -> float:
    """Share of predictions whose normalised form equals the normalised reference answer."""
    if len(preds) != len(items):
        msg = f"got {len(preds)} predictions for {len(items)} items; pass one per item"
        raise ValueError(msg)
    if not items:
        return 0.0
    hits = sum(
        normalize_answer(p) == normalize_answer(it.answer)
        for p, it in zip(preds, items, strict=True)
    )
    return hits / len(items)


def autocast_bf16(device: torch.device, enabled: bool | None = None) -> AbstractContextManager[Any]:
    """bf16 autocast on CUDA (or wherever ``enabled``), else nothing."""
    if enabled if enabled is not None else device.type == "cuda":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def evaluate_all(
    model: PreTrainedModel,
    processor: VQAProcessor,
    datasets: Sequence[str],
    *,
    limit: int,
    batch_size: int,
    device: torch.device,
    autocast: bool | None = None,
) -> dict[str, Any]:
    """Accuracy on the first ``limit`` train and test items of every dataset.

    ``autocast`` turns bf16 autocast on or off (default: on for CUDA).

    Returns:
        ``{"<dataset>/<split>": {"accuracy", "n", "per_task", "examples"}}``.
    """
    metrics: dict[str, Any] = {}
    for name in datasets:
        for split in ("train", "test"):
            items = list(load_split(name, split, limit=limit))
            with autocast_bf16(device, autocast):
                preds = answer_questions(model, processor, items, batch_size, 4, device)
            per_task: dict[str, list[int]] = {}
            for p, it in zip(preds, items, strict=True):
                hit = int(normalize_answer(p) == normalize_answer(it.answer))
                per_task.setdefault(it.task, []).append(hit)
            metrics[f"{name}/{split}"] = {
                "accuracy": round(accuracy(preds, items), 4),
                "n": len(items),
                "per_task": {t: round(sum(h) / len(h), 4) for t, h in sorted(per_task.items())},
                "examples": [
                    [it.question, it.answer, p] for it, p in zip(items[:5], preds[:5], strict=False)
                ],
            }
            log.info(
                "%s/%s accuracy %.3f (n=%d)",
                name,
                split,
                metrics[f"{name}/{split}"]["accuracy"],
                len(items),
            )
    return metrics
