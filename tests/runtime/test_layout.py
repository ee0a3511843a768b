"""Direct tests of the stage layout and gather maths (halfv.runtime.layout), against naive
per-sample loops: which slots a stage has, and what its prefill and decode masks allow."""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st

from halfv.runtime.layout import (
    gather_seq,
    initial_layout,
    next_layout,
    prefill_stage_mask,
    remap_decode_mask,
)


@st.composite
def survivors(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor]:
    """``(visual, alive)`` ``[B, T]`` bool: each sample keeps its text and some visual."""
    b = draw(st.integers(1, 3))
    t = draw(st.integers(2, 12))
    visual = torch.tensor(
        draw(st.lists(st.lists(st.booleans(), min_size=t, max_size=t), min_size=b, max_size=b))
    )
    visual[:, -1] = False  # the query position is text
    keep = torch.tensor(
        draw(st.lists(st.lists(st.booleans(), min_size=t, max_size=t), min_size=b, max_size=b))
    )
    return visual, ~visual | keep


@given(survivors())
def test_next_layout_lists_the_survivors_in_order(case: tuple[torch.Tensor, torch.Tensor]) -> None:
    visual, alive = case
    layout = next_layout(initial_layout(visual), alive, visual)
    b, t = alive.shape
    assert layout.length == int(alive.sum(1).max())
    for i in range(b):
        real = layout.orig_pos[i][layout.valid[i]].tolist()
        assert real == [p for p in range(t) if alive[i, p]]
        assert not layout.valid[i, : layout.length - len(real)].any()  # dummies in front
        assert layout.orig_pos[i, -1] == t - 1  # the last slot is the query
        assert torch.equal(layout.visual[i], visual[i, layout.orig_pos[i]])
    assert layout.has_dummies == bool((alive.sum(1) != layout.length).any())


def _causal(b: int, t: int, extra: int) -> torch.Tensor:
    """A bool ``[B, 1, T, T + extra]`` mask with random padding columns."""
    allowed = torch.ones(t, t + extra, dtype=torch.bool).tril()
    allowed[:, t:] = False  # a static cache's unwritten room
    pad = torch.zeros(b, t, dtype=torch.bool)
    pad[0, 0] = b > 1
    full = allowed.expand(b, 1, t, t + extra).clone()
    full[..., :t] &= ~pad[:, None, None, :]
    return full


@given(survivors(), st.integers(0, 3), st.booleans())
def test_prefill_stage_mask_equals_a_naive_loop(
    case: tuple[torch.Tensor, torch.Tensor], extra: int, additive: bool
) -> None:
    visual, alive = case
    b, t = alive.shape
    layout = next_layout(initial_layout(visual), alive, visual)
    allowed = _causal(b, t, extra)
    mask = allowed
    if additive:
        mask = torch.where(allowed, 0.0, torch.finfo(torch.float32).min)
    got = prefill_stage_mask(mask, layout)
    assert got is not None
    assert got.shape == (b, 1, layout.length, layout.length + extra)
    got_allowed = got if got.dtype == torch.bool else got == 0
    for i in range(b):
        for r in range(layout.length):
            for c in range(layout.length):
                if not layout.valid[i, r]:
                    # a dummy row's result is never read; it must read itself (no empty
                    # softmax row, so no NaN)
                    if r == c:
                        assert bool(got_allowed[i, 0, r, c])
                    continue
                if not layout.valid[i, c]:
                    expected = False
                else:
                    expected = bool(allowed[i, 0, layout.orig_pos[i, r], layout.orig_pos[i, c]])
                assert bool(got_allowed[i, 0, r, c]) == expected
            if layout.valid[i, r]:  # the room beyond the prompt passes through
                tail = allowed[i, 0, layout.orig_pos[i, r], t:]
                assert torch.equal(got_allowed[i, 0, r, layout.length :], tail)


@given(survivors(), st.integers(1, 3))
def test_decode_mask_reads_the_stage_slots_then_the_new_tokens(
    case: tuple[torch.Tensor, torch.Tensor], generated: int
) -> None:
    visual, alive = case
    b, t = alive.shape
    layout = next_layout(initial_layout(visual), alive, visual)
    gen = torch.Generator().manual_seed(b * 100 + t)
    mask = torch.rand(b, 1, 1, t + generated, generator=gen) > 0.3
    got = remap_decode_mask(mask, layout, t, 1, t + generated)
    assert got is not None
    assert got.shape == (b, 1, 1, layout.length + generated)
    for i in range(b):
        for c in range(layout.length):
            expected = bool(layout.valid[i, c]) and bool(mask[i, 0, 0, layout.orig_pos[i, c]])
            assert bool(got[i, 0, 0, c]) == expected
        assert torch.equal(got[i, 0, 0, layout.length :], mask[i, 0, 0, t:])


def test_gather_seq_broadcasts_a_shared_table() -> None:
    table = torch.arange(10.0).view(1, 5, 2)  # one rotary table for the whole batch
    index = torch.tensor([[0, 3], [4, 1]])
    got = gather_seq(table, index)
    assert torch.equal(got, torch.stack([table[0, [0, 3]], table[0, [4, 1]]]))
