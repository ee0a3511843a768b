"""The PaliGemma (Gemma-1 language model) adapter; PaliGemma 2 is refused.

It follows ``transformers/models/paligemma/modeling_paligemma.py`` (the ``follows``
attribute says which transformers release it was tested on): the decoder layers it hooks
are that file's ``language_model`` (a ``GemmaModel``: pre-norm blocks with
``input_layernorm``, ``self_attn.{q,k,v,o}_proj``, ``post_attention_layernorm`` and
``mlp``, full-width rotate-half rotary, one layer type), and the visual token id is the
config's ``image_token_id``.

**Bidirectional prefix.** ``processing_paligemma.py`` lays a prompt out as
``<image>*N <bos> text \\n`` (the *prefix*, ``token_type_ids`` 0) followed by an optional
*suffix* (type 1). ``PaliGemmaModel.forward`` passes ``block_sequence_ids`` to
``create_causal_mask`` on the first forward, so the prefix attends bidirectionally (image
rows read the text after them) and only the suffix is causal; decode steps are causal.
The mask arrives at every decoder layer as a 4-D tensor, never ``None``, and halfv
gathers it at the survivors' original positions on both axes (rows and columns), so a
pruned stage keeps exactly the model's prefix-LM pattern over the surviving tokens; the
frozen layer reads its text rows of that same mask. The independent masked reference
(:func:`halfv.testing.masked_reference`) masks the dropped keys of the model's own mask,
bidirectional block included, and the tests compare both on prompts with and without a
suffix.

**PaliGemma 2** runs a Gemma-2 decoder: sliding-window layers, attention-logit
softcapping and sandwich norms (a norm after the attention and after the MLP). halfv's
frozen layer assumes pre-norm blocks and its relevance scores do not softcap, so a freeze
schedule would be silently wrong and relevance would not be the model's attention: the
adapter refuses it (:class:`~halfv.errors.UnsupportedModelError`) rather than guess.
"""

from __future__ import annotations

from typing import ClassVar

from torch import nn

from halfv.adapters.base import LlamaStyleAdapter
from halfv.config import PruningConfig
from halfv.errors import UnsupportedModelError

__all__ = ["PaliGemmaAdapter"]

#: the decoder PaliGemma (1) ships with; any other text model_type is refused
SUPPORTED_TEXT_MODEL = "gemma"


class PaliGemmaAdapter(LlamaStyleAdapter):
    """PaliGemma: IVR at 3 of 32 keeping 50 % (20 % anchors), freeze visual tokens from
    15, scaled to depth (PaliGemma-3B: Gemma-2B, 18 layers -> IVR at 2, freeze from 8).

    Gemma-1 is neither a Qwen nor a Llama checkpoint and no HalfV lifecycle was measured
    on it, so the choice is the conservative one: ``freeze`` removes nothing that a later
    text row reads (every IVR survivor stays a key and value to the end), where ``prune``
    at 5 % would bet on Qwen-like token sparsity; PaliGemma's prefix is bidirectional,
    so text reads the image at every depth. The shallow IVR stage keeps half the tokens,
    as the release's LLaVA-1.5 schedule does at the same relative depth. Run ``halfv
    profile`` / ``halfv calibrate`` on your checkpoint to choose from measurements.
    """

    name: ClassVar[str] = "paligemma"
    model_types: ClassVar[tuple[str, ...]] = ("paligemma",)
    follows: ClassVar[str] = (
        "transformers/models/paligemma/modeling_paligemma.py (tested on transformers 5.24)"
    )
    token_id_fields: ClassVar[tuple[str, ...]] = ("image_token_id",)
    reference_layers: ClassVar[int] = 32
    reference_schedule: ClassVar[PruningConfig] = PruningConfig(
        ivr_layer=3,
        ivr_keep=0.5,
        ivr_policy_options={"attention_share": 0.2},
        ssr_layer=15,
        ssr_mode="freeze",
    )

    def language_model(self, model: nn.Module) -> nn.Module:
        """The Gemma decoder; a PaliGemma 2 (Gemma-2 decoder) is refused."""
        config = getattr(model, "config", None)
        text = getattr(config, "text_config", None)
        text_type = getattr(text, "model_type", SUPPORTED_TEXT_MODEL)
        if text_type != SUPPORTED_TEXT_MODEL:
            msg = (
                f"adapter {self.name!r} supports PaliGemma with a Gemma decoder, this model's "
                f"decoder is {text_type!r} (PaliGemma 2: sliding-window layers, attention-"
                "logit softcapping and sandwich norms). halfv's frozen layer assumes pre-norm "
                "blocks and its relevance scores do not softcap, so pruning it could be "
                "silently wrong. Use a PaliGemma (1) checkpoint, or pass your own adapter "
                "(halfv.apply(model, config, adapter=...)) and prove it with "
                "halfv.testing.check_backbone"
            )
            raise UnsupportedModelError(msg)
        return super().language_model(model)
