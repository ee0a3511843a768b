"""The Idefics3 (Llama-3 language model) adapter.

It follows ``transformers/models/idefics3/modeling_idefics3.py`` (the ``follows``
attribute says which transformers release it was tested on): the decoder is
``Idefics3Model.text_model`` (a ``LlamaModel``), at ``model.model.text_model`` rather
than at ``language_model``; ``Idefics3Model`` itself receives ``input_ids`` (the entry
module), merges the connector's features into the ``<image>`` rows and calls the decoder
with ``inputs_embeds``. The visual token id is the config's ``image_token_id``.

Layout (``processing_idefics3.py``): a split image is one ``<image>`` run per tile, each
after ``<fake_token_around_image><row_r_col_c>``, then the global view after
``<fake_token_around_image><global-img>``; the marker tokens are text. Every tile (and
the global view) is therefore its own span with its own budget, as InternVL's tiles are.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from halfv.adapters.base import LlamaStyleAdapter
from halfv.adapters.llava import LlavaAdapter
from halfv.config import PruningConfig
from halfv.errors import HalfvTypeError

__all__ = ["Idefics3Adapter"]


class Idefics3Adapter(LlamaStyleAdapter):
    """Idefics3: the LLaVA-1.5 schedule (IVR at 3 of 32 keeping 50 %, 20 % anchors, freeze
    visual tokens from 15), scaled to depth.

    Idefics3-8B's language model is Llama-3.1-8B (32 layers), a Llama like LLaVA-1.5's
    Vicuna, on which the HalfV release tuned that schedule (method doc §7); the lifecycle
    is a property of the backbone. Run ``halfv profile`` on your checkpoint to recalibrate.
    """

    name: ClassVar[str] = "idefics3"
    model_types: ClassVar[tuple[str, ...]] = ("idefics3",)
    follows: ClassVar[str] = (
        "transformers/models/idefics3/modeling_idefics3.py (tested on transformers 5.24)"
    )
    token_id_fields: ClassVar[tuple[str, ...]] = ("image_token_id",)
    reference_layers: ClassVar[int] = LlavaAdapter.reference_layers
    reference_schedule: ClassVar[PruningConfig] = LlavaAdapter.reference_schedule

    def language_model(self, model: nn.Module) -> nn.Module:
        """``model.model.text_model`` (or ``model.text_model`` for the base model)."""
        for path in (("model", "text_model"), ("text_model",)):
            module: Any = model
            for attr in path:
                module = getattr(module, attr, None)
            if isinstance(module, nn.Module) and isinstance(
                getattr(module, "layers", None), nn.ModuleList
            ):
                return module
        msg = (
            f"adapter {self.name!r} cannot find the text decoder of {type(model).__name__}: "
            "expected model.model.text_model.layers"
        )
        raise HalfvTypeError(msg)
