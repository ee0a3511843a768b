"""The frozen-visual decoder layer (SSR ``freeze``, method doc §5b).

From the SSR layer on, visual tokens stop being updated: their hidden states pass through
unchanged, yet text tokens still attend to them. Per layer this computes

* the input norm and the K/V projections of *every* row (visual keys at their original
  positions, written to the KV cache so decoding sees them),
* queries, attention, the output projection and the MLP for *text rows only*,
* and leaves visual rows untouched.

It reproduces, for pre-norm Llama-style layers (Llama, Mistral, Qwen2, Qwen2.5-VL text),
``transformers.models.llama.modeling_llama.LlamaDecoderLayer.forward`` with the visual
rows' updates removed; an explicit mask of ``[text queries x all keys]`` built from the
original positions replaces the causal flag (which is wrong when queries are a subset).

Sandwich blocks (``transformers.models.gemma3.modeling_gemma3.Gemma3DecoderLayer``, GLM-4)
norm each sublayer's output before its residual add: the frozen path applies the block's
own ``attn_output_norm`` and ``mlp_output_norm`` (:class:`~halfv.interfaces.AttentionParts`)
there. A layer with attention-logit soft capping (``parts.softcap``) runs the capped
softmax of the model's eager attention instead of SDPA.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from halfv.devices import module_device
from halfv.errors import UnsupportedModelError
from halfv.interfaces import AttentionParts, LayerSpec, RotaryFn
from halfv.ops.relevance import rotate_half
from halfv.runtime.layout import StageLayout, gather_rows

__all__ = ["check_blocks", "frozen_visual_forward", "query_rows_of"]


def query_rows_of(layout: StageLayout) -> tuple[Tensor, Tensor]:
    """Slots whose rows are computed in a frozen layer: the real text slots.

    Returns:
        ``(rows, row_valid)``, each ``[B, Q]``; samples with fewer text slots are
        front-padded with non-text slots marked invalid (their results are discarded).
        Built once per stage layout (:attr:`StageLayout.text_rows`), not once per layer.
    """
    return layout.text_rows


def check_blocks(
    specs: Sequence[LayerSpec],
    parts: Mapping[int, AttentionParts] | Sequence[AttentionParts],
    mode: str,
    first: int | None,
) -> None:
    """Refuse to freeze a layer whose block the frozen path cannot reproduce.

    A layer the adapter declares a sandwich block must give its output norms (else the
    frozen text rows would skip them: a silently wrong answer), and a pre-norm block none.
    """
    if mode != "freeze" or first is None:
        return
    for idx in range(first, len(specs)):
        if specs[idx].kind == "linear":  # no attention parts: frozen by its own forward
            continue
        spec, part = specs[idx], parts[idx]
        if (spec.block == "sandwich") != part.sandwich:
            msg = (
                f"layer {idx}: the adapter's layer_specs() says block={spec.block!r}, but its "
                "attention_parts() give attn_output_norm="
                f"{type(part.attn_output_norm).__name__}, mlp_output_norm="
                f"{type(part.mlp_output_norm).__name__}; a sandwich block needs its output norms "
                "(a pre-norm block has none) for ssr_mode='freeze'. Fix the adapter"
            )
            raise UnsupportedModelError(msg)


def _rope(x: Tensor, cos: Tensor, sin: Tensor, fn: RotaryFn | None) -> Tensor:
    """Rotate ``x`` ``[B, H, R, hd]``: with the layer's own function ``fn`` when it has one
    (partial, interleaved; tables ``[B, R, rotary_dim]``), else Llama's rotate-half (tables
    already ``[B, 1, R, hd]``). The tables are in the stage's dtype; cast only if ``x``'s
    is not theirs (e.g. under autocast)."""
    if cos.dtype != x.dtype:
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    if fn is not None:
        return fn(x, x, cos, sin)[0]
    return x * cos + rotate_half(x) * sin


def _query(parts: AttentionParts, projected: Tensor) -> tuple[Tensor, Tensor | None]:
    """``[B, Q, H, hd]`` queries and, for a gated query, the ``[B, Q, H * hd]`` gate."""
    b, q = projected.shape[:2]
    if not parts.query_gate:
        return projected.view(b, q, -1, parts.head_dim), None
    query, gate = projected.view(b, q, -1, 2 * parts.head_dim).chunk(2, dim=-1)
    return query, gate.reshape(b, q, -1)


def _query_mask(
    stage_mask: Tensor | None,
    layout: StageLayout,
    rows: Tensor,
    row_valid: Tensor,
    sliding_window: int | None,
) -> Tensor:
    """Bool ``[B, 1, Q, K]``: which keys each text query may read (the stage mask's
    rows; without one, causal and within ``sliding_window`` of the original positions).

    ``K`` is the stage's ``S`` slots, plus the stage mask's further columns when the cache
    holds room beyond the prompt (a static cache: those columns pass through as they are).
    """
    s = layout.length
    tail = None
    if stage_mask is not None:
        picked = gather_rows(stage_mask[:, 0], rows)[:, None]
        allowed = picked if picked.dtype == torch.bool else picked == 0
        if allowed.shape[-1] > s:
            allowed, tail = allowed[..., :s], allowed[..., s:]
    else:
        cols = torch.arange(s, device=rows.device)
        allowed = (cols[None, None, :] <= rows[:, :, None])[:, None]
        allowed = allowed & layout.valid[:, None, None, :]
    if sliding_window is not None and stage_mask is None:
        # a model's own mask already holds its window, and may lift it: PaliGemma 2's
        # bidirectional prefix (``block_sequence_ids``) is OR-ed over the sliding window
        q_pos = layout.orig_pos.gather(1, rows)
        distance = q_pos[:, None, :, None] - layout.orig_pos[:, None, None, :]
        allowed = allowed & (distance < sliding_window)
    own = torch.nn.functional.one_hot(rows, s).bool()[:, None]
    allowed = allowed | (own & ~row_valid[:, None, :, None])
    return allowed if tail is None else torch.cat([allowed, tail], dim=-1)


def frozen_visual_forward(
    parts: AttentionParts,
    hidden: Tensor,
    *,
    position_embeddings: tuple[Tensor, Tensor],
    stage_mask: Tensor | None,
    layout: StageLayout,
    cache: object | None,
    layer_idx: int,
    memo: dict[Any, Any] | None = None,
    rotary_fn: RotaryFn | None = None,
) -> Tensor:
    """Run one decoder layer with frozen visual rows.

    Args:
        parts: the layer's internals.
        hidden: ``[B, S, D]`` stage hidden states.
        position_embeddings: stage ``(cos, sin)``, ``[B or 1, S, head_dim]``.
        stage_mask: the stage's 4-D mask or ``None`` (causal over slots).
        layout: the stage's layout (visual slots, valid slots).
        cache: the transformers cache (or ``None``); receives every row's K/V.
        layer_idx: this layer's index in the cache.
        memo: a dict kept for the prefill: the stage's shared inputs (query rows, rotary
            tables, query mask) are built by its first frozen layer and reused by the
            others.
        rotary_fn: the layer's own rotary function (``LayerSpec.rotary``), or ``None``
            for Llama's rotate-half over the whole head.

    Returns:
        ``[B, S, D]``: text rows updated, visual and dummy rows unchanged.
    """
    device = module_device(parts.q_proj, hidden.device)
    if hidden.device != device:
        hidden = hidden.to(device)
    b, s, _ = hidden.shape
    # rotary_fn decides the tables' shape: [B, R, d] for it, [B, 1, R, d] for rotate-half
    key = (device, id(layout), id(stage_mask), id(position_embeddings), hidden.dtype, rotary_fn)
    inputs = None if memo is None else memo.get(key)
    if inputs is None:  # once per stage: every frozen layer of the stage reads the same
        layout = layout.to(device)
        inputs = _stage_inputs(
            position_embeddings, stage_mask, layout, hidden, parts, rotary_fn=rotary_fn
        )
        if memo is not None:
            memo[key] = inputs
    index, row_valid, (cos, sin), (cos_q, sin_q), allowed = inputs
    q_len = index.shape[1]

    x = parts.input_layernorm(hidden)
    q, gate = _query(parts, parts.q_proj(x.gather(1, index)))
    k = parts.k_proj(x).view(b, s, -1, parts.head_dim)
    v = parts.v_proj(x).view(b, s, -1, parts.head_dim)
    if parts.q_norm is not None:
        q = parts.q_norm(q)
    if parts.k_norm is not None:
        k = parts.k_norm(k)
    q = _rope(q.transpose(1, 2), cos_q, sin_q, rotary_fn)
    k = _rope(k.transpose(1, 2), cos, sin, rotary_fn)
    v = v.transpose(1, 2)
    if cache is not None:
        k, v = cache.update(k, v, layer_idx)  # type: ignore[attr-defined]
    if k.shape[-2] > allowed.shape[-1]:  # a static cache's unwritten room: never read
        allowed = F.pad(allowed, (0, k.shape[-2] - allowed.shape[-1]), value=False)
    attn = _attend(q, k, v, allowed, parts)
    attn = attn.transpose(1, 2).reshape(b, q_len, -1)
    if gate is not None:  # a gated query (Qwen3.5): the output gate, as the model applies it
        attn = attn * torch.sigmoid(gate)
    residual = hidden.gather(1, index)
    updated = residual + _sublayer_out(parts.o_proj(attn), parts.attn_output_norm)
    mlp_out = parts.mlp(parts.post_attention_layernorm(updated))
    updated = updated + _sublayer_out(mlp_out, parts.mlp_output_norm)
    if row_valid is not None:  # a ragged batch: padding rows keep their input
        updated = torch.where(row_valid, updated, residual)
    return hidden.scatter(1, index, updated)


def _sublayer_out(out: Tensor, norm: torch.nn.Module | None) -> Tensor:
    """A sublayer's output as its residual add sees it: normed in a sandwich block."""
    return out if norm is None else norm(out)


def _attend(q: Tensor, k: Tensor, v: Tensor, allowed: Tensor, parts: AttentionParts) -> Tensor:
    """``[B, H, Q, hd]`` attention of the text queries; soft-capped like the model's eager
    attention when ``parts.softcap`` is set."""
    if parts.softcap is None:
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=allowed, scale=parts.scaling, enable_gqa=True
        )
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    logits = torch.matmul(q, k.transpose(2, 3)) * parts.scaling
    logits = torch.tanh(logits / parts.softcap) * parts.softcap
    logits = logits.masked_fill(~allowed, torch.finfo(logits.dtype).min)
    weights = torch.softmax(logits, dim=-1, dtype=torch.float32).to(q.dtype)
    return torch.matmul(weights, v)


_FrozenInputs = tuple[Tensor, Tensor | None, tuple[Tensor, Tensor], tuple[Tensor, Tensor], Tensor]


def _stage_inputs(
    position_embeddings: tuple[Tensor, Tensor],
    stage_mask: Tensor | None,
    layout: StageLayout,
    hidden: Tensor,
    parts: AttentionParts,
    *,
    rotary_fn: RotaryFn | None,
) -> _FrozenInputs:
    """What every frozen layer of a stage shares, built once so that each layer launches
    only its own work: the text rows' gather/scatter index ``[B, Q, D]``, their validity
    ``[B, Q, 1]`` (``None`` when no sample has padding rows), the rotary tables of all rows
    and of the query rows in the hidden dtype (``[B, *, rotary_dim]`` for the layer's own
    ``rotary_fn``, ``[B, 1, *, head_dim]`` for rotate-half) and the query mask."""
    device, (b, _, d) = layout.orig_pos.device, hidden.shape
    rows, row_valid = query_rows_of(layout)
    cos, sin = (t.to(device).expand(b, -1, -1) for t in position_embeddings)
    allowed = _query_mask(
        None if stage_mask is None else stage_mask.to(device),
        layout,
        rows,
        row_valid,
        parts.sliding_window,
    )
    cos_q, sin_q = gather_rows(cos, rows), gather_rows(sin, rows)
    tables = (cos, sin, cos_q, sin_q)
    heads = tuple(t.to(hidden.dtype) if rotary_fn else t[:, None].to(hidden.dtype) for t in tables)
    index = rows[..., None].expand(-1, -1, d)
    valid = None if layout.uniform_text else row_valid[..., None]
    return index, valid, (heads[0], heads[1]), (heads[2], heads[3]), allowed
