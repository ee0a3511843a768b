"""The SmolVLM (SmolLM2 language model) adapter.

It follows ``transformers/models/smolvlm/modeling_smolvlm.py`` (the ``follows``
attribute says which transformers release it was tested on), which is Idefics3's
modeling code under new names: the decoder is ``SmolVLMModel.text_model`` (a
``LlamaModel``: SmolLM2 is a Llama), at ``model.model.text_model``, and the prompt layout
is Idefics3's (one span per tile and one for the global view; see
:mod:`halfv.adapters.idefics3`).
"""

from __future__ import annotations

from typing import ClassVar

from halfv.adapters.idefics3 import Idefics3Adapter

__all__ = ["SmolVLMAdapter"]


class SmolVLMAdapter(Idefics3Adapter):
    """SmolVLM: Idefics3's schedule, the LLaVA-1.5 (Llama) one scaled to depth (SmolVLM-256M
    and -500M: 30 and 32 layers; SmolVLM-2.2B: 24)."""

    name: ClassVar[str] = "smolvlm"
    model_types: ClassVar[tuple[str, ...]] = ("smolvlm",)
    follows: ClassVar[str] = (
        "transformers/models/smolvlm/modeling_smolvlm.py (tested on transformers 5.24)"
    )
