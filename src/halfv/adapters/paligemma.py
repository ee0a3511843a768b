"""The PaliGemma adapter: Gemma-1 (PaliGemma) and Gemma-2 (PaliGemma 2) language models.

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

**PaliGemma 2** runs a Gemma-2 decoder (``transformers/models/gemma2/modeling_gemma2.py``):
``config.layer_types`` alternates ``sliding_attention`` (window ``config.sliding_window``)
and ``full_attention`` layers, each block is a *sandwich* (``post_attention_layernorm`` on
the attention output, ``pre_feedforward_layernorm`` / ``post_feedforward_layernorm``
around the MLP, read by :func:`halfv.adapters.base.block_norms`), and ``Gemma2Attention``
soft-caps its attention logits (``attn_logit_softcapping``, passed to the attention
function as ``softcap``). The default ``layer_specs`` reads the layers (each
``Gemma2Attention.sliding_window``, the sandwich norms) and
:meth:`PaliGemmaAdapter.attention_parts` adds the soft cap, which the frozen layer and the
scaled relevance apply as the model's eager attention does. transformers' SDPA attention
refuses a soft cap, so a PaliGemma 2 with ``attn_logit_softcapping`` set runs on eager.
Any other decoder is refused (:class:`~halfv.errors.UnsupportedModelError`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import ClassVar

from torch import nn

from halfv.adapters.base import LlamaStyleAdapter
from halfv.adapters.llava import LlavaAdapter
from halfv.config import PruningConfig
from halfv.errors import UnsupportedModelError
from halfv.layers import AttentionParts

__all__ = ["PaliGemmaAdapter"]

#: the decoders of PaliGemma (1) and PaliGemma 2; any other text model_type is refused
SUPPORTED_TEXT_MODELS = ("gemma", "gemma2")


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
    reference_layers: ClassVar[int] = LlavaAdapter.reference_layers
    reference_schedule: ClassVar[PruningConfig] = LlavaAdapter.reference_schedule

    def language_model(self, model: nn.Module) -> nn.Module:
        """The Gemma or Gemma-2 decoder; any other decoder is refused."""
        config = getattr(model, "config", None)
        text = getattr(config, "text_config", None)
        text_type = getattr(text, "model_type", SUPPORTED_TEXT_MODELS[0])
        if text_type not in SUPPORTED_TEXT_MODELS:
            msg = (
                f"adapter {self.name!r} supports PaliGemma with a Gemma or Gemma-2 decoder "
                f"(PaliGemma, PaliGemma 2); this model's decoder is {text_type!r}, whose "
                "layers halfv has not been checked against. Pass your own adapter "
                "(halfv.apply(model, config, adapter=...)) and prove it with "
                "halfv.testing.check_backbone"
            )
            raise UnsupportedModelError(msg)
        return super().language_model(model)

    def attention_parts(self, layer: nn.Module) -> AttentionParts:
        """The Llama-style parts, with Gemma-2's attention-logit soft cap when it has one."""
        parts = super().attention_parts(layer)
        softcap = getattr(getattr(layer, "self_attn", None), "attn_logit_softcapping", None)
        return parts if softcap is None else replace(parts, softcap=float(softcap))
