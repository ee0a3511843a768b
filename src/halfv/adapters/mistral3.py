"""The Mistral3 (Mistral Small 3.x, Pixtral tower) adapter.

It follows ``transformers/models/mistral3/modeling_mistral3.py`` (the ``follows``
attribute says which transformers release it was tested on): the decoder layers it hooks
are that file's ``language_model`` (a ``MistralModel``), and the visual token id is the
config's ``image_token_id`` (``[IMG]``).

**One span per image.** ``processing_pixtral.py`` (the processor Mistral3 checkpoints
use) lays an image of ``h x w`` merged patches out as ``h`` rows of ``w`` ``[IMG]``
tokens, each row ended by ``[IMG_BREAK]`` and the last by ``[IMG_END]``. Without help,
every row would be a span with its own budget (two images of 4 rows: 8 spans of 4, and a
5 % SSR keeps one token of each: nothing is removed). The adapter names ``[IMG_BREAK]``
as a span joiner (:meth:`~halfv.BackboneAdapter.span_joiners`): the rows of one image
form one span, budgeted as a whole, and the break tokens themselves are text (never
pruned). ``[IMG_END]`` is not a joiner, so two images are two spans.

Where the ``[IMG_BREAK]`` id comes from, first found wins:

1. the adapter's own ``image_break_token_id`` (``Mistral3Adapter(image_break_token_id=
   processor.image_break_token_id)``);
2. ``model.config.image_break_token_id``, if the config carries one;
3. the Mistral tekken vocabulary of every released Mistral3 / Pixtral checkpoint
   (``[IMG]`` = 10, ``<pad>`` = 11, ``[IMG_BREAK]`` = 12, ``[IMG_END]`` = 13), when the
   config's ``image_token_id`` is that vocabulary's ``[IMG]`` (10).

``Mistral3Config`` itself names only ``image_token_index``; with another ``[IMG]`` id
and no break id given, :meth:`Mistral3Adapter.span_joiners` raises a
:class:`~halfv.errors.UnsupportedModelError` naming the fix.
"""

from __future__ import annotations

from typing import ClassVar

from torch import nn

from halfv.adapters.base import LlamaStyleAdapter
from halfv.adapters.llava_next import LlavaNextAdapter
from halfv.config import PruningConfig
from halfv.errors import UnsupportedModelError
from halfv.interfaces import SaturationDetector

__all__ = ["TEKKEN_IMG", "TEKKEN_IMG_BREAK", "Mistral3Adapter", "pixtral_row_joiners"]

#: ``[IMG]`` and ``[IMG_BREAK]`` in Mistral's tekken vocabulary (special tokens 10 and 12)
TEKKEN_IMG, TEKKEN_IMG_BREAK = 10, 12


class Mistral3Adapter(LlamaStyleAdapter):
    """Mistral3: the LLaVA-NeXT (Mistral-7B) schedule, IVR at 2 of 32 keeping 50 % (10 %
    anchors), freeze visual tokens from 16, scaled to depth (Mistral-Small-3.1-24B: 40
    layers -> IVR at 3, freeze from 20).

    The language model is a Mistral, the backbone the HalfV release tuned that schedule
    on (method doc §7); budgets are per image across row breaks.
    """

    name: ClassVar[str] = "mistral3"
    model_types: ClassVar[tuple[str, ...]] = ("mistral3",)
    follows: ClassVar[str] = (
        "transformers/models/mistral3/modeling_mistral3.py and "
        "transformers/models/pixtral/processing_pixtral.py (tested on transformers 5.24)"
    )
    token_id_fields: ClassVar[tuple[str, ...]] = ("image_token_id",)
    reference_layers: ClassVar[int] = LlavaNextAdapter.reference_layers
    reference_schedule: ClassVar[PruningConfig] = LlavaNextAdapter.reference_schedule

    def __init__(
        self,
        saturation_detector: SaturationDetector | None = None,
        *,
        image_break_token_id: int | None = None,
    ) -> None:
        super().__init__(saturation_detector)
        self.image_break_token_id = image_break_token_id

    def span_joiners(self, model: nn.Module) -> frozenset[int]:
        """``{[IMG_BREAK]}``: the rows of one image form one span (module docstring)."""
        return pixtral_row_joiners(self, model, self.image_break_token_id)


def pixtral_row_joiners(
    adapter: LlamaStyleAdapter, model: nn.Module, explicit: int | None
) -> frozenset[int]:
    """The ``[IMG_BREAK]`` id of a model whose images come from Pixtral's processor:
    ``explicit``, else ``model.config.image_break_token_id``, else the tekken id (12) when
    ``[IMG]`` is the tekken one (10); refused when none applies (module docstring)."""
    if explicit is not None:
        return frozenset({int(explicit)})
    configured = getattr(model.config, "image_break_token_id", None)
    if isinstance(configured, int):
        return frozenset({configured})
    image_ids = adapter.visual_token_ids(model)
    if image_ids == (TEKKEN_IMG,):
        return frozenset({TEKKEN_IMG_BREAK})
    msg = (
        f"adapter {adapter.name!r}: the [IMG] token id is {image_ids}, not the Mistral "
        "tekken vocabulary's 10, so the [IMG_BREAK] id that joins an image's rows into one "
        "span is unknown. Pass it: set model.config.image_break_token_id = "
        "processor.image_break_token_id (or, for Mistral3, adapter="
        "Mistral3Adapter(image_break_token_id=processor.image_break_token_id))"
    )
    raise UnsupportedModelError(msg)
