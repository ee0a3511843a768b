"""transformers' ``pipeline("image-text-to-text")`` under ``halfv.apply``.

The pipeline preprocesses with the processor and calls ``model.generate``; halfv's hooks sit
on the model, so pruning happens inside the pipeline as in a hand-written generate call.
The model is a tiny random LLaVA saved to a folder with a real processor
(:mod:`tiny_pretrained`), loaded the way a user loads a checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PIL import Image

import halfv
from tiny_pretrained import save_tiny_llava

VISUAL = 64  # tiny_pretrained.IMAGE_SIZE 112 -> 8 x 8 patches
GENERATE = {"max_new_tokens": 6, "do_sample": False}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_llava(tmp_path_factory.mktemp("tiny-llava"))


@pytest.fixture(scope="module")
def pipe(model_dir: Path) -> Any:
    from transformers import AutoModelForImageTextToText, AutoProcessor, pipeline

    model = AutoModelForImageTextToText.from_pretrained(model_dir).eval()
    processor = AutoProcessor.from_pretrained(model_dir)
    return pipeline("image-text-to-text", model=model, processor=processor)


def _messages(colour: tuple[int, int, int]) -> list[dict[str, Any]]:
    image = Image.new("RGB", (96, 80), (255, 255, 255))
    image.paste(Image.new("RGB", (40, 40), colour), (20, 20))
    return [
        {
            "role": "user",
            "content": [
                {"type": "image", "image": image},
                {"type": "text", "text": "what colour is the shape ?"},
            ],
        }
    ]


def _answer(pipe: Any, messages: list[dict[str, Any]]) -> str:
    out = pipe(text=messages, generate_kwargs=GENERATE, return_full_text=False)
    text = out[0]["generated_text"]
    assert isinstance(text, str)
    return text


def test_pipeline_is_pruned(pipe: Any) -> None:
    config = halfv.PruningConfig(ivr_layer=2, ivr_keep=0.25)
    with halfv.apply(pipe.model, config) as handle:
        answer = _answer(pipe, _messages((220, 30, 30)))
        stats = handle.stats
        flops = handle.flops()
    assert answer.strip(), "the pipeline generated nothing"
    assert stats is not None, "halfv saw no prefill: the pipeline bypassed the hooks"
    assert stats.visual_tokens == (VISUAL,)
    kept = halfv.kept_count(VISUAL, 0.25)
    assert stats.kept_visual_per_layer() == [VISUAL, VISUAL] + [kept] * 4
    assert flops.speedup_exact > 1.0


def test_keep_all_equals_the_unpruned_pipeline(pipe: Any) -> None:
    prompts = [_messages(colour) for colour in ((220, 30, 30), (30, 30, 220), (30, 200, 30))]
    plain = [_answer(pipe, m) for m in prompts]
    with halfv.apply(pipe.model, halfv.PruningConfig(ivr_layer=2, ivr_keep=1.0)) as handle:
        kept_all = [_answer(pipe, m) for m in prompts]
        stats = handle.stats
    assert stats is not None, "halfv saw no prefill: the pipeline bypassed the hooks"
    assert stats.kept_visual_per_layer() == [VISUAL] * 6
    assert kept_all == plain
