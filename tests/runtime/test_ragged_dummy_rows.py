"""Dummy slots of a ragged batch see only themselves, whatever mask the model passes.

A batch whose samples keep different numbers of tokens pads the shorter ones at the front
with dummy slots. Their results are never read by the real rows, but
``output_hidden_states`` returns them, and transformers' own
``test_eager_matches_sdpa_inference`` compares every row: a dummy row read the real
columns before it when the model passed a mask (eager) and only itself when it passed none
(SDPA without padding), so eager and SDPA disagreed on those rows. Now a dummy row reads
only itself in both cases.
"""

from __future__ import annotations

import copy

import torch

import halfv
from halfv.runtime.layout import initial_layout, next_layout, prefill_stage_mask
from tiny import BUILDERS

PRUNE = halfv.PruningConfig(ivr_layer=2, ivr_keep=0.25, ssr_layer=None)


def _ragged_layout() -> tuple[torch.Tensor, object]:
    visual = torch.tensor([[0, 1, 1, 1, 1, 0, 0], [0, 0, 0, 0, 0, 0, 0]], dtype=torch.bool)
    keep = torch.tensor([[1, 1, 0, 0, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    alive = ~visual | keep
    return visual, next_layout(initial_layout(visual), alive, visual)


def test_dummy_rows_see_only_themselves_with_and_without_a_mask() -> None:
    visual, layout = _ragged_layout()
    b, t = visual.shape
    assert layout.has_dummies
    causal = torch.ones(t, t, dtype=torch.bool).tril().expand(b, 1, t, t)
    additive = torch.where(causal, 0.0, torch.finfo(torch.float32).min)
    for mask in (None, causal, additive):
        got = prefill_stage_mask(mask, layout)
        assert got is not None
        allowed = got if got.dtype == torch.bool else got == 0
        for i in range(b):
            for r in range(layout.length):
                if not layout.valid[i, r]:
                    expected = torch.zeros(layout.length, dtype=torch.bool)
                    expected[r] = True
                    assert torch.equal(allowed[i, 0, r], expected)


def test_eager_and_sdpa_return_the_same_hidden_states_for_a_ragged_batch() -> None:
    tiny = BUILDERS["llava"](layers=4)
    sdpa = tiny.model
    eager = copy.deepcopy(sdpa)
    eager.set_attn_implementation("eager")
    # one sample with an image, one text-only sample of the same length: no padding, so
    # SDPA gets no mask while eager gets the causal one; the image sample has dummies
    inputs = tiny.prompt([[4, "img", 6], [10 + tiny.visual_per_image]])
    assert bool(inputs["attention_mask"].all())
    outputs = {}
    for name, model in (("sdpa", sdpa), ("eager", eager)):
        with halfv.apply(model, PRUNE) as handle, torch.no_grad():
            outputs[name] = model(**inputs, output_hidden_states=True).hidden_states
            stats = handle.stats
        assert stats is not None
        assert stats.layers[-1].sequence[0] < stats.layers[-1].sequence[1]  # ragged
    for got_sdpa, got_eager in zip(outputs["sdpa"], outputs["eager"], strict=True):
        torch.testing.assert_close(got_sdpa, got_eager, rtol=1e-5, atol=1e-5)
