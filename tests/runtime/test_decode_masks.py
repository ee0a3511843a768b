"""Decode masks of pruned layers, checked against transformers' own cache layers.

The keys fed to a real ``DynamicLayer`` / ``DynamicSlidingWindowLayer`` carry their
original position as their value, so the keys the layer returns for a decode step say
which positions its mask must describe; the expected mask follows from them alone.
"""

from __future__ import annotations

import pytest
import torch
from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

from halfv.runtime.decode_masks import cache_window, layer_decode_mask
from halfv.runtime.layout import initial_layout, next_layout

T = 20


class _Cache:
    def __init__(self, layer: DynamicLayer) -> None:
        self.layers = [layer]


def _layout(alive_rows: list[list[int]]) -> tuple[torch.Tensor, object]:
    b = len(alive_rows)
    visual = torch.zeros(b, T, dtype=torch.bool)
    visual[:, 4:16] = True
    alive = ~visual
    for i, kept in enumerate(alive_rows):
        alive[i, kept] = True
    return alive, next_layout(initial_layout(visual), alive, visual)


@pytest.mark.parametrize("window", [None, 6, 9])
@pytest.mark.parametrize("generated", [0, 3, 11])
@pytest.mark.parametrize("dtype", [torch.bool, torch.float32])
def test_mask_describes_the_keys_the_cache_returns(
    window: int | None, generated: int, dtype: torch.dtype
) -> None:
    _, layout = _layout([[5, 9, 14], [4, 6, 7, 8, 15]])  # ragged: front dummies
    b, s = layout.orig_pos.shape
    pad = torch.ones(b, T, dtype=torch.bool)
    pad[0, :2] = False  # left padding of sample 0
    layer = DynamicLayer() if window is None else DynamicSlidingWindowLayer(window)
    cache = _Cache(layer)
    slot_pos = torch.where(layout.valid, layout.orig_pos, -1).float()
    layer.update(slot_pos[:, None, :, None], slot_pos[:, None, :, None])
    for g in range(generated):
        step = torch.full((b, 1, 1, 1), float(T + g))
        layer.update(step, step)
    held = cache_window(cache, 0, window)
    assert held.seen == s + generated
    like = None if dtype == torch.bool else torch.zeros(1, dtype=dtype)
    mask = layer_decode_mask(held, layout, T, 1, prompt_keys=pad, step_keys=None, like=like)
    new = torch.full((b, 1, 1, 1), float(T + generated))
    keys, _ = layer.update(new, new)
    positions = keys[:, 0, :, 0].long()  # [B, K]
    assert mask.shape == (b, 1, 1, positions.shape[1])
    query = T + generated
    padded = torch.zeros_like(positions, dtype=torch.bool)
    for i in range(b):
        for k, p in enumerate(positions[i].tolist()):
            padded[i, k] = 0 <= p < T and not bool(pad[i, p])
    expected = (positions >= 0) & ~padded & (positions <= query)
    if window is not None:
        expected &= query - positions < window
    allowed = mask[:, 0, 0] if dtype == torch.bool else mask[:, 0, 0] == 0
    assert torch.equal(allowed, expected)
    if window == 9 and generated == 3:
        assert not bool(expected[0].all())  # a kept slot is out of the window
