"""What the runtime must know about a backbone's decoder layers (adapter API v2).

Plain data, no behaviour: :class:`AttentionParts` (the modules of one layer halfv reads
directly), :class:`LayerSpec` (its kind, window, block structure and rotary),
:data:`RotaryFn` and :class:`TokenInputs` (per-token inputs a pruned stage must gather).
An adapter returns them from :class:`halfv.interfaces.BackboneAdapter`'s methods; they are
re-exported from :mod:`halfv.interfaces`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import Tensor, nn

__all__ = ["AttentionParts", "LayerSpec", "RotaryFn", "TokenInputs"]


@dataclass(frozen=True)
class AttentionParts:
    """The pieces of one decoder layer halfv reads directly.

    ``q_norm``/``k_norm`` are per-head norms applied before RoPE (``None`` if absent).
    ``sliding_window`` is the layer's window (``None`` for full attention).
    ``query_gate``: ``q_proj`` gives, per head, the query then an output gate of the same
    size (Qwen3-Next, Qwen3.5): relevance reads the query half, and the attention output
    is multiplied by ``sigmoid(gate)`` before ``o_proj``.

    ``post_attention_layernorm`` is always the norm *in front of the MLP* (Llama's
    ``post_attention_layernorm``, Gemma's ``pre_feedforward_layernorm``). A sandwich block
    (Gemma 2/3, GLM-4) also norms each sublayer's output before its residual add:
    ``attn_output_norm`` (Gemma's ``post_attention_layernorm``, GLM-4's
    ``post_self_attn_layernorm``) and ``mlp_output_norm`` (Gemma's
    ``post_feedforward_layernorm``, GLM-4's ``post_mlp_layernorm``); both ``None`` in a
    pre-norm block. ``softcap`` is the attention-logit soft cap the model applies
    (``softcap * tanh(logits / softcap)`` before the mask), ``None`` if it applies none.
    """

    input_layernorm: nn.Module
    q_proj: nn.Linear
    k_proj: nn.Linear
    v_proj: nn.Linear
    o_proj: nn.Linear
    post_attention_layernorm: nn.Module
    mlp: nn.Module
    num_heads: int
    num_kv_heads: int
    head_dim: int
    scaling: float
    q_norm: nn.Module | None = None
    k_norm: nn.Module | None = None
    sliding_window: int | None = None
    attn_output_norm: nn.Module | None = None
    mlp_output_norm: nn.Module | None = None
    softcap: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    query_gate: bool = False

    @property
    def sandwich(self) -> bool:
        """Whether the block norms its sublayers' outputs (a sandwich block)."""
        return self.attn_output_norm is not None or self.mlp_output_norm is not None


#: ``(q, k, cos, sin) -> (q, k)`` with ``q``/``k`` ``[B, H, S, head_dim]`` and the tables
#: ``[B, S, rotary_dim]``: transformers' ``apply_rotary_pos_emb`` signature (unsqueeze on
#: dim 1). Partial or interleaved rotary is the adapter's model's own function.
RotaryFn = Callable[[Tensor, Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]


@dataclass(frozen=True)
class LayerSpec:
    """What the runtime must know about one decoder layer (adapter API v2).

    Attributes:
        kind: ``"full"`` causal attention, ``"sliding"`` attention over the last
            ``window`` positions, or ``"linear"`` (a recurrent / linear-attention layer:
            no softmax scores, no per-position KV cache).
        window: the sliding window (``kind == "sliding"`` only).
        block: ``"pre_norm"`` (Llama: norm, attention, residual, norm, MLP, residual) or
            ``"sandwich"`` (Gemma 2/3, GLM-4: also a norm after the attention and after
            the MLP, before each residual add).
        rotary: how the layer rotates queries and keys; ``None`` is Llama's rotate-half
            over the whole head.
        layer_type: the model's name for the layer's type (``config.layer_types``), which
            transformers uses to pick the layer's mask; ``None`` when the model has one.
    """

    kind: Literal["full", "sliding", "linear"] = "full"
    window: int | None = None
    block: Literal["pre_norm", "sandwich"] = "pre_norm"
    rotary: RotaryFn | None = None
    layer_type: str | None = None


@dataclass(frozen=True)
class TokenInputs:
    """Extra per-token inputs that a pruned stage must gather like the hidden states.

    Some text decoders add features to chosen rows of the hidden states after their first
    layers, inside their own layer loop and with full-prompt tensors (Qwen3-VL's DeepStack:
    ``deepstack_visual_embeds[i]`` is added to the rows of ``visual_pos_masks`` after
    decoder layer ``i``). After a prune those tensors no longer match the sequence. An
    adapter names them here (:meth:`BackboneAdapter.token_inputs`); during a pruned
    prefill halfv takes them out of ``module``'s call and adds them itself after the same
    layers, gathered at each stage's surviving rows (:mod:`halfv.runtime.token_inputs`).
    Other calls (decode steps, text-only prompts, a disabled handle) leave them to the model.

    Attributes:
        module: the module whose forward receives them as keyword arguments (usually
            :meth:`BackboneAdapter.language_model`).
        mask_arg: keyword of the bool ``[B, T]`` mask of the rows that receive features.
        features_arg: keyword of the per-layer features: a sequence whose item ``i``,
            ``[mask.sum(), D]`` in the row-major order of the mask, is added to the
            hidden states after decoder layer ``i``.
        max_layers: how many leading decoder layers may receive features (halfv hooks
            only these; a call with more feature tensors is refused).
    """

    module: nn.Module
    mask_arg: str
    features_arg: str
    max_layers: int
