"""State surgery for pruned sequences: pure tensor maths, no model wiring.

After a prune the decoder runs on a shorter sequence. Every tensor the decoder loop
passes to a layer is built once for the *original* prompt, so each pruned stage carries a
:class:`StageLayout` that maps its slots back to original positions. With it we gather
rotary tables, position ids and 4-D masks, so every surviving token keeps its original
position, and remap decode-time masks onto each layer's (shorter) KV cache.

Ragged batches: samples may keep different numbers of tokens. Shorter samples are padded
*at the front* with dummy slots (``valid == False``) so that the last slot is always the
last real prompt token (the LM head reads it). A dummy slot is invisible to every query
and always attends to itself, so it can never produce NaNs; its own result is never read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

__all__ = [
    "StageLayout",
    "allowed_to_mask",
    "gather_rows",
    "gather_seq",
    "initial_layout",
    "next_layout",
    "prefill_stage_mask",
    "remap_decode_mask",
]


@dataclass(frozen=True)
class StageLayout:
    """Slots of one pruned stage.

    Attributes:
        orig_pos: ``[B, S]`` original prompt position of each slot, increasing over the
            real slots of a sample.
        valid: ``[B, S]`` False on front-padding dummy slots.
        visual: ``[B, S]`` True on visual slots.
        prev_index: ``[B, S]`` column of each slot in the previous stage's sequence (what
            hidden states are gathered with at the stage boundary).
        has_dummies: whether any slot is a dummy (then masks are always needed).
        real_visual: number of real visual slots over the whole batch when the host knows
            it (from the budgets), so their rows can be listed without a device sync.
        text_slots: the most real text slots any sample has, when the host knows it (the
            rows a frozen layer computes; see :attr:`text_rows`).
        uniform_text: every sample has exactly ``text_slots`` real text slots (known on
            the host), so no text row of a frozen layer is padding.
    """

    orig_pos: Tensor
    valid: Tensor
    visual: Tensor
    prev_index: Tensor
    has_dummies: bool
    real_visual: int | None = None
    text_slots: int | None = None
    uniform_text: bool = False

    @property
    def length(self) -> int:
        """Number of slots ``S``."""
        return int(self.orig_pos.shape[1])

    @cached_property
    def valid_cols(self) -> Tensor:
        """``valid`` as ``[B, 1, 1, S]`` key columns (built once, reused every decode step)."""
        return self.valid[:, None, None, :]

    @cached_property
    def visual_rows(self) -> Tensor:
        """``[M]`` flat row indices ``b * S + slot`` of the real visual slots, row-major.

        Built once per layout. With :attr:`real_visual` known, a stable sort lists the
        marked slots (no host sync); without it, ``nonzero`` (one sync).
        """
        marked = (self.visual & self.valid).reshape(-1)
        if self.real_visual is None:
            return marked.nonzero().squeeze(1)
        order = torch.sort(marked.to(torch.uint8), descending=True, stable=True).indices
        return order[: self.real_visual]

    @cached_property
    def text_rows(self) -> tuple[Tensor, Tensor]:
        """``(rows, row_valid)``, each ``[B, Q]``: the real text slots of every sample.

        Samples with fewer text slots are front-padded with non-text slots marked invalid.
        Built once per layout; without :attr:`text_slots` it costs one host sync.
        """
        is_text = self.valid & ~self.visual
        b, s = is_text.shape
        q = self.text_slots
        if q is None:
            q = int(is_text.sum(dim=1).max().item())
        arange = torch.arange(s, device=is_text.device).expand(b, s)
        order = torch.where(is_text, arange + s, arange).argsort(dim=1)[:, s - q :]
        return order, is_text.gather(1, order)

    @cached_property
    def dummy_cols(self) -> Tensor:
        """``~valid`` as ``[B, 1, 1, S]`` key columns."""
        return ~self.valid_cols

    def to(self, device: torch.device) -> StageLayout:
        """The same layout on ``device``."""
        if self.orig_pos.device == device:
            return self
        return StageLayout(
            orig_pos=self.orig_pos.to(device),
            valid=self.valid.to(device),
            visual=self.visual.to(device),
            prev_index=self.prev_index.to(device),
            has_dummies=self.has_dummies,
            real_visual=self.real_visual,
            text_slots=self.text_slots,
            uniform_text=self.uniform_text,
        )


def initial_layout(visual_mask: Tensor, real_visual: int | None = None) -> StageLayout:
    """The identity layout of the unpruned prompt (``real_visual``: see StageLayout)."""
    b, t = visual_mask.shape
    pos = torch.arange(t, device=visual_mask.device).expand(b, t)
    return StageLayout(
        orig_pos=pos,
        valid=torch.ones_like(visual_mask),
        visual=visual_mask,
        prev_index=pos,
        has_dummies=False,
        real_visual=real_visual,
    )


def next_layout(
    prev: StageLayout,
    alive: Tensor,
    visual_mask: Tensor,
    *,
    counts: Sequence[int] | None = None,
    visual_counts: Sequence[int] | None = None,
) -> StageLayout:
    """The layout of the next stage.

    Args:
        prev: layout of the current stage.
        alive: ``[B, T]`` bool over ORIGINAL positions: tokens that survive into the next
            stage (a subset of the current stage's real slots).
        visual_mask: ``[B, T]`` bool over original positions.
        counts: ``alive.sum(1)`` when the caller knows it on the host (the budgets fix it);
            without it the layout costs a host sync.
        visual_counts: the alive visual tokens of each sample, if the host knows them
            (then the layout lists its visual and text rows without syncs).

    Returns:
        Layout whose real slots are the alive positions in original order, front-padded
        with dummies so every sample has ``max(alive.sum(1))`` slots.
    """
    b, t = alive.shape
    if counts is None:
        on_device = alive.sum(dim=1)
        counts = [int(c) for c in on_device.tolist()]  # one host sync per stage
    length = max(counts)
    arange = torch.arange(t, device=alive.device).expand(b, t)
    # Dead positions sort first, alive ones last, each group in original order; the last
    # `length` columns are (length - count) dead fillers followed by every alive position.
    key = torch.where(alive, arange + t, arange)
    order = key.argsort(dim=1)[:, t - length :]
    valid = alive.gather(1, order)
    # Column of each original position in the previous stage (0 where it was not present;
    # only dummies read those, and their content is never used).
    prev_col = torch.zeros(b, t, dtype=torch.long, device=alive.device)
    prev_cols = torch.arange(prev.length, device=alive.device).expand(b, -1)
    prev_col.scatter_(1, prev.orig_pos, torch.where(prev.valid, prev_cols, 0))
    return StageLayout(
        orig_pos=order,
        valid=valid,
        visual=visual_mask.gather(1, order),
        prev_index=prev_col.gather(1, order),
        has_dummies=any(c != length for c in counts),
        real_visual=None if visual_counts is None else sum(visual_counts),
        text_slots=(
            None
            if visual_counts is None
            else max(c - v for c, v in zip(counts, visual_counts, strict=True))
        ),
        uniform_text=(
            visual_counts is not None
            and len({c - v for c, v in zip(counts, visual_counts, strict=True)}) == 1
        ),
    )


def gather_seq(x: Tensor, index: Tensor, dim: int = 1) -> Tensor:
    """Gather ``x`` along its sequence axis ``dim`` with a per-sample ``index`` ``[B, S]``.

    ``x`` may have batch size 1 (broadcast tables such as rotary cos/sin); it is expanded
    to the index's batch size.
    """
    b, s = index.shape
    if x.shape[0] != b:
        x = x.expand(b, *x.shape[1:])
    shape = [1] * x.dim()
    shape[0], shape[dim] = b, s
    full = list(x.shape)
    full[dim] = s
    idx = index.view(shape).expand(full)
    return x.gather(dim, idx)


def gather_rows(x: Tensor, index: Tensor) -> Tensor:
    """Gather rows of ``x`` ``[B, T, D]`` by ``index`` ``[B, S]`` (a ``gather_seq`` alias)."""
    return gather_seq(x, index, dim=1)


def allowed_to_mask(allowed: Tensor, like: Tensor | None, dtype: torch.dtype) -> Tensor:
    """Turn a bool *allowed* mask into the style the model uses.

    Bool masks (SDPA) stay bool; float masks (eager) become 0 / ``finfo.min``.
    """
    if like is not None and like.dtype != torch.bool:
        zero = torch.zeros((), dtype=like.dtype, device=allowed.device)
        return torch.where(allowed, zero, torch.finfo(like.dtype).min)
    if like is None and dtype != torch.bool:
        zero = torch.zeros((), dtype=dtype, device=allowed.device)
        return torch.where(allowed, zero, torch.finfo(dtype).min)
    return allowed


def _is_allowed(mask: Tensor) -> Tensor:
    return mask if mask.dtype == torch.bool else mask == 0


def prefill_stage_mask(mask: Tensor | None, layout: StageLayout) -> Tensor | None:
    """The 4-D prefill mask of a stage, from the full-prompt mask.

    Args:
        mask: ``[B, 1, T, K]`` (bool or additive float) or ``None`` (plain causal); ``K``
            is ``T``, or more with a static cache (room for generated tokens).
        layout: the stage's layout.

    Returns:
        ``[B, 1, S, S + K - T]`` in the same style, or ``None`` when the stage needs no
        mask.
    """
    if mask is None and not layout.has_dummies:
        return None
    tail = None
    if mask is not None:
        rows = gather_seq(mask, layout.orig_pos, dim=2)
        t = mask.shape[-2]
        if rows.shape[-1] > t:  # a static cache's room beyond the prompt: kept as is
            rows, tail = rows[..., :t], rows[..., t:]
        allowed = _is_allowed(gather_seq(rows, layout.orig_pos, dim=3))
    else:
        s = layout.length
        causal = torch.ones(s, s, dtype=torch.bool, device=layout.valid.device).tril()
        allowed = causal.expand(layout.valid.shape[0], 1, s, s)
    # no query sees a dummy column, and a dummy row sees only itself (with or without the
    # caller's mask: its result is never read, but output_hidden_states returns it)
    allowed = allowed & layout.valid[:, None, None, :] & layout.valid[:, None, :, None]
    eye = torch.eye(layout.length, dtype=torch.bool, device=allowed.device)
    allowed = allowed | (eye & ~layout.valid[:, None, :, None])
    result = allowed_to_mask(allowed, mask, torch.bool)
    return result if tail is None else torch.cat([result, tail], dim=-1)


def remap_decode_mask(
    mask: Tensor | None,
    layout: StageLayout,
    prompt_len: int,
    query_len: int,
    cached_len: int,
) -> Tensor | None:
    """Map a decode-time mask built for layer 0's cache onto a pruned layer's cache.

    Layer 0 caches the whole prompt (``prompt_len`` entries) plus every token generated
    since; a pruned layer caches the stage's ``S`` slots instead of the prompt. Columns
    for generated tokens are unchanged.

    Args:
        mask: ``[B, 1, q, K0]`` with ``K0 = cached_len``, or ``None`` (SDPA without padding).
        layout: the stage's layout.
        prompt_len: original prompt length ``T``.
        query_len: number of new query tokens ``q``.
        cached_len: layer 0's key count including the new tokens (``K0``).
    """
    if mask is None:
        if not layout.has_dummies:
            return None
        # Ragged batch without padding: build the mask SDPA would otherwise not need.
        generated = cached_len - prompt_len
        device = layout.valid.device
        rows = torch.arange(query_len, device=device)[:, None] + (generated - query_len)
        cols = torch.arange(generated, device=device)[None, :]
        new_block = (cols <= rows).expand(layout.valid.shape[0], 1, query_len, generated)
        prompt_block = layout.valid_cols.expand(-1, 1, query_len, -1)
        return torch.cat([prompt_block, new_block], dim=-1)
    prompt_cols = gather_seq(mask[..., :prompt_len], layout.orig_pos, dim=3)
    if layout.has_dummies:
        if prompt_cols.dtype == torch.bool:
            prompt_cols = prompt_cols & layout.valid_cols
        else:
            min_value = torch.finfo(prompt_cols.dtype).min
            prompt_cols = prompt_cols.masked_fill(layout.dummy_cols, min_value)
    return torch.cat([prompt_cols, mask[..., prompt_len:]], dim=-1)
