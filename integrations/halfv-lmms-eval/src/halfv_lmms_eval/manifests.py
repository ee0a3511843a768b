"""The ``lmms_eval.models`` entry point: one manifest per halfv model id."""

from __future__ import annotations

from lmms_eval.models.registry_v2 import ModelManifest

__all__ = ["MODEL_CLASSES", "manifests"]

#: lmms-eval model id -> class (under halfv_lmms_eval.model)
MODEL_CLASSES: dict[str, str] = {
    "halfv": "HalfvModel",
    "halfv_llava": "HalfvLlava",
    "halfv_llava_next": "HalfvLlavaNext",
    "halfv_qwen2_5_vl": "HalfvQwen2_5_VL",
    "halfv_internvl": "HalfvInternVL",
}


def manifests() -> list[ModelManifest]:
    """Chat-model manifests lmms-eval registers at start-up (``--model halfv`` etc.)."""
    return [
        ModelManifest(model_id=model_id, chat_class_path=f"halfv_lmms_eval.model.{cls}")
        for model_id, cls in MODEL_CLASSES.items()
    ]
