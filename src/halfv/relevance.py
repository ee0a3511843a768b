"""Last-token relevance of visual tokens, without eager attention.

HalfV ranks visual tokens by how much the final prompt token attends to them at the layer
*before* a pruning layer (method doc §4A): that layer's input norm, its query projection
of the last token only, its key projection of the visual tokens only, a softmax over each
visual span's keys, and the mean over heads. Only ``B`` query rows and ``M`` visual key
rows are projected; no ``T x T`` matrix is ever formed, so the model keeps running on
SDPA.

Upstream quirks kept by default and configurable: no ``1/sqrt(head_dim)`` scaling
(``scale=False``), RoPE off for the IVR pass and on for the SSR pass.
"""

from __future__ import annotations

import torch
from torch import Tensor

from halfv.devices import module_device
from halfv.interfaces import AttentionParts

__all__ = ["apply_rotary", "last_token_relevance", "rotate_half"]


def rotate_half(x: Tensor) -> Tensor:
    """The rotate-half half of rotary embeddings (Llama convention)."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate ``x`` ``[rows, heads, head_dim]`` by per-row tables ``[rows, head_dim]``."""
    cos, sin = cos[:, None, :].to(x.dtype), sin[:, None, :].to(x.dtype)
    rotated: Tensor = x * cos + rotate_half(x) * sin
    return rotated


def _project_heads(
    parts: AttentionParts, x: Tensor, proj: torch.nn.Linear, norm: torch.nn.Module | None
) -> Tensor:
    heads: Tensor = proj(x).view(x.shape[0], -1, parts.head_dim)
    if norm is None:
        return heads
    normed: Tensor = norm(heads)
    return normed


def last_token_relevance(
    hidden: Tensor,
    *,
    query_rows: Tensor,
    visual_rows: Tensor,
    segment: Tensor,
    num_segments: int,
    parts: AttentionParts,
    rotary: tuple[Tensor, Tensor] | None,
    scale: bool,
) -> Tensor:
    """Relevance of each visual row to its sample's last prompt token.

    Args:
        hidden: ``[B, S, D]`` input hidden states of the scoring layer.
        query_rows: ``[B]`` flat row index ``b * S + slot`` of each sample's query token.
        visual_rows: ``[M]`` flat row indices of the visual tokens, grouped by span.
        segment: ``[M]`` span id of each visual row, in ``[0, num_segments)``.
        num_segments: number of spans.
        parts: the scoring layer's internals.
        rotary: ``(cos, sin)`` each ``[B*S, head_dim]`` (flattened like ``hidden``), or
            ``None`` to score without RoPE.
        scale: multiply logits by ``parts.scaling`` (``1/sqrt(head_dim)``).

    Returns:
        ``[M]`` float32 relevance; it sums to 1 over the rows of each span.
    """
    b, s, d = hidden.shape
    device = module_device(parts.q_proj, hidden.device)
    flat = hidden.reshape(b * s, d)
    q_in = parts.input_layernorm(flat[query_rows.to(flat.device)].to(device))
    k_in = parts.input_layernorm(flat[visual_rows.to(flat.device)].to(device))
    q = _project_heads(parts, q_in, parts.q_proj, parts.q_norm)  # [B, H, hd]
    k = _project_heads(parts, k_in, parts.k_proj, parts.k_norm)  # [M, KV, hd]
    if rotary is not None:
        cos, sin = rotary
        q_at, k_at = query_rows.to(cos.device), visual_rows.to(cos.device)
        q = apply_rotary(q, cos[q_at].to(device), sin[q_at].to(device))
        k = apply_rotary(k, cos[k_at].to(device), sin[k_at].to(device))
    k = k.repeat_interleave(parts.num_heads // parts.num_kv_heads, dim=1)  # GQA: head h -> kv h//r
    sample_of_row = visual_rows.to(device) // s
    logits = (q.float()[sample_of_row] * k.float()).sum(dim=-1)  # [M, H]
    if scale:
        logits = logits * parts.scaling
    seg = segment.to(device)[:, None].expand_as(logits)
    peak = torch.full((num_segments, logits.shape[1]), -torch.inf, device=device)
    peak = peak.scatter_reduce(0, seg, logits, reduce="amax", include_self=True)
    weights = (logits - peak.gather(0, seg)).exp()
    totals = torch.zeros_like(peak).scatter_add(0, seg, weights)
    return (weights / totals.gather(0, seg)).mean(dim=1)
