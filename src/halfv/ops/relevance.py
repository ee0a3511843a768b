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

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from halfv.devices import module_device
from halfv.errors import UnsupportedModelError
from halfv.interfaces import AttentionParts, RotaryFn
from halfv.ops.selection import bmm_out_dtype_works

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup

__all__ = ["apply_rotary", "last_token_relevance", "relevance_from_projections", "rotate_half"]


def rotate_half(x: Tensor) -> Tensor:
    """The rotate-half half of rotary embeddings (Llama convention)."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor, fn: RotaryFn | None = None) -> Tensor:
    """Rotate ``x`` ``[rows, heads, head_dim]`` by per-row tables ``[rows, rotary_dim]``.

    ``fn`` is the layer's own rotary function (:attr:`halfv.interfaces.LayerSpec.rotary`:
    partial or interleaved rotary, e.g. GLM-4's); ``None`` is Llama's rotate-half over the
    whole head. ``fn`` sees each row as a batch of one position, ``[rows, heads, 1, hd]``
    with tables ``[rows, 1, rotary_dim]``, its own signature.
    """
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    if fn is not None:
        rows = x[:, :, None, :]
        own, _ = fn(rows, rows, cos[:, None, :], sin[:, None, :])
        return own[:, :, 0, :]
    rotated: Tensor = x * cos[:, None, :] + rotate_half(x) * sin[:, None, :]
    return rotated


def _heads(
    parts: AttentionParts, projected: Tensor, norm: torch.nn.Module | None, gated: bool = False
) -> Tensor:
    """``[rows, heads, head_dim]`` of a projection (a gated query: its query half)."""
    if gated:
        both = projected.view(projected.shape[0], -1, 2 * parts.head_dim)
        projected = both[..., : parts.head_dim]
    heads: Tensor = projected.reshape(projected.shape[0], -1, parts.head_dim)
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
    head_group: tuple[ProcessGroup, int] | None = None,
    rotary_fn: RotaryFn | None = None,
    visible: Tensor | None = None,
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
        head_group: under tensor parallelism, the process group (and its size) whose
            ranks each project a share of the heads
            (:func:`halfv.runtime.distributed.head_group`); the per-head probabilities
            are then summed over its ranks before dividing by ``parts.num_heads``.
        rotary_fn: the layer's own rotary function (:func:`apply_rotary`), or ``None``.
        visible: ``[M]`` bool, the rows the query can see (a sliding-window layer hides
            keys ``window`` or more positions back); hidden rows get relevance 0, as in the
            model's own softmax. ``None``: every row is visible.

    Returns:
        ``[M]`` float32 relevance; it sums to 1 over the visible rows of each span (0 over
        a span none of whose rows is visible).
    """
    b, s, d = hidden.shape
    device = module_device(parts.q_proj, hidden.device)
    flat = hidden.reshape(b * s, d)
    q_in = parts.input_layernorm(flat[query_rows.to(flat.device)].to(device))
    k_in = parts.input_layernorm(flat[visual_rows.to(flat.device)].to(device))
    return relevance_from_projections(
        parts.q_proj(q_in),
        parts.k_proj(k_in),
        rows_per_sample=s,
        query_rows=query_rows,
        visual_rows=visual_rows,
        segment=segment,
        num_segments=num_segments,
        parts=parts,
        rotary=rotary,
        scale=scale,
        head_group=head_group,
        rotary_fn=rotary_fn,
        visible=visible,
    )


def relevance_from_projections(
    queries: Tensor,
    keys: Tensor,
    *,
    rows_per_sample: int,
    query_rows: Tensor,
    visual_rows: Tensor,
    segment: Tensor,
    num_segments: int,
    parts: AttentionParts,
    rotary: tuple[Tensor, Tensor] | None,
    scale: bool,
    head_group: tuple[ProcessGroup, int] | None = None,
    rotary_fn: RotaryFn | None = None,
    visible: Tensor | None = None,
) -> Tensor:
    """:func:`last_token_relevance` from the scoring layer's query and key projections.

    Args:
        queries: the ``q_proj`` output of each sample's query row, ``[B, H * head_dim]``.
        keys: the ``k_proj`` output of each visual row, ``[M, KV * head_dim]``.
        rows_per_sample: ``S``, the sequence length the flat row indices refer to.
        query_rows: as in :func:`last_token_relevance`.
        visual_rows: as in :func:`last_token_relevance`.
        segment: as in :func:`last_token_relevance`.
        num_segments: as in :func:`last_token_relevance`.
        parts: the scoring layer's internals.
        rotary: as in :func:`last_token_relevance`.
        scale: as in :func:`last_token_relevance`.
        head_group: as in :func:`last_token_relevance`.
        rotary_fn: as in :func:`last_token_relevance`.
        visible: as in :func:`last_token_relevance`.

    The runtime reads the projections the scoring layer computes in its own forward
    (``halfv.runtime.scoring.ProjectionTap``) and passes their rows here, so the visual tokens
    are not normed and projected a second time.
    """
    device = queries.device
    q = _heads(parts, queries, parts.q_norm, parts.query_gate)  # [B, H, hd]
    k = _heads(parts, keys.to(device), parts.k_norm)  # [M, KV, hd]
    if rotary is not None:
        cos, sin = rotary
        q_at, k_at = query_rows.to(cos.device), visual_rows.to(cos.device)
        q = apply_rotary(q, cos[q_at].to(device), sin[q_at].to(device), rotary_fn)
        k = apply_rotary(k, cos[k_at].to(device), sin[k_at].to(device), rotary_fn)
    sample_of_row = visual_rows.to(device) // rows_per_sample
    logits = _logits(q, k, sample_of_row)  # [M, H] float32
    if scale:
        logits = logits * parts.scaling
    if visible is not None:
        logits = logits.masked_fill(~visible.to(device)[:, None], -torch.inf)
    if num_segments == 1:  # one image: a plain max (a scatter would serialise on one row)
        peak = logits.amax(dim=0, keepdim=True)
        weights = (logits - peak).exp()
        probs = weights / weights.sum(dim=0, keepdim=True)
    else:
        seg = segment.to(device)[:, None].expand_as(logits)
        peak = torch.full((num_segments, logits.shape[1]), -torch.inf, device=device)
        peak = peak.scatter_reduce(0, seg, logits, reduce="amax", include_self=True)
        weights = (logits - peak.gather(0, seg)).exp()
        totals = torch.zeros_like(peak).scatter_add(0, seg, weights)
        probs = weights / totals.gather(0, seg)
    if visible is not None:  # a span with no visible row: 0 / 0 -> 0
        probs = torch.nan_to_num(probs, nan=0.0)
    return _mean_over_heads(probs, parts, head_group)


def _mean_over_heads(
    probs: Tensor, parts: AttentionParts, head_group: tuple[ProcessGroup, int] | None
) -> Tensor:
    """``[M]`` mean over all heads of the per-head probabilities ``probs`` ``[M, H_local]``.

    Without tensor parallelism every head is local: a plain mean. Otherwise each rank
    holds ``H / N`` heads: their probabilities are summed, the sums all-reduced over the
    group, and the total divided by the model's ``H`` (the same mean, up to the order of
    the float32 additions).
    """
    if head_group is None:
        return probs.mean(dim=1)
    group, size = head_group
    local = probs.shape[1]
    if local * size != parts.num_heads:
        msg = (
            f"halfv: under tensor parallelism over {size} ranks this rank's q_proj gives "
            f"{local} heads of head_dim {parts.head_dim}, but the model has "
            f"num_attention_heads={parts.num_heads} (expected {parts.num_heads // size} per "
            "rank); the projections are not column-sharded by whole heads. Load the model "
            "with the transformers 'colwise' plan for q_proj/k_proj"
        )
        raise UnsupportedModelError(msg)
    total = probs.detach().sum(dim=1)  # scores only rank tokens: no gradient through them
    torch.distributed.all_reduce(total, group=group)
    return total / parts.num_heads


def _logits(q: Tensor, k: Tensor, sample_of_row: Tensor) -> Tensor:
    """``[M, H]`` float32 ``q[sample, h] . k[row, h // r]`` (GQA: ``r`` query heads per KV head).

    Products of half-precision values are exact in float32 and the sums run in float32:
    on CUDA one batched GEMM with float32 output over the KV heads (all samples' queries
    at once, then each row keeps its own sample's column); elsewhere, an elementwise
    product and sum. Neither repeats the keys per query head.
    """
    b, h, hd = q.shape
    m, kv, _ = k.shape
    r = h // kv
    if k.is_cuda and k.dtype in (torch.float16, torch.bfloat16) and bmm_out_dtype_works("cuda"):
        queries = q.view(b, kv, r, hd).permute(1, 3, 0, 2).reshape(kv, hd, b * r)
        every = torch.bmm(k.transpose(0, 1), queries, out_dtype=torch.float32)  # [KV, M, B*r]
        pick = sample_of_row.view(1, m, 1, 1).expand(kv, m, 1, r)
        mine = every.view(kv, m, b, r).gather(2, pick).squeeze(2)  # [KV, M, r]
        return mine.permute(1, 0, 2).reshape(m, h)
    queries = q.float().view(b, kv, r, hd)[sample_of_row]  # [M, KV, r, hd]
    return (queries * k.float().unsqueeze(2)).sum(dim=-1).reshape(m, h)
