"""A frozen layer launches little more than an unpruned one (issue #19: a lean frozen path).

Each op a prefill dispatches is a kernel launch (or at least a dispatch) on a GPU, where a
pruned prefill of one small image is host-bound. A frozen layer runs the same norms,
projections, attention and MLP as the layer's own forward, on fewer query rows; what it
adds is the gather of the query rows' inputs, the gather of their residual and the scatter
of their results. Everything the layers of a frozen stage share (the gather/scatter
index, the rotary tables in the layer's shape and dtype, the query mask) is built once per
stage. The padding ``where`` runs only for batches whose samples keep different numbers of
text rows.

Gemma 3's sandwich blocks run the same check: their output norms are the layer's own work,
and its sliding and full layers each have their own rotary tables and mask (two sets of
shared inputs per stage).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

import halfv
from halfv.ops.host_ops import OpCounter
from tiny import BUILDERS, Tiny
from tiny_gemma import build_gemma

LAYERS = 8
IVR = halfv.PruningConfig(ivr_layer=2, ivr_keep=0.5, ivr_policy="attention", min_gain=None)
#: ops a frozen layer may add over the same layer unfrozen: two gathers and a scatter
PER_LAYER = 3
#: ops the frozen stage may add once (its shared inputs: query rows, rotary tables, mask)
PER_STAGE = 60

_MODELS: dict[str, Tiny] = {}


def _ops(model: torch.nn.Module, config: halfv.PruningConfig, inputs: dict[str, Any]) -> int:
    with torch.inference_mode(), halfv.apply(model, config):
        model(**inputs, logits_to_keep=1)  # warm: lazy imports, first-call caches
        with OpCounter() as counter:
            model(**inputs, logits_to_keep=1)
    return counter.dispatched


CASES = [([[5, "img", 7]], False), ([[4, "img", 6], [9, "img", 2]], True)]
#: sets of shared stage inputs per frozen stage (Gemma 3: sliding and full layers)
STAGE_INPUTS = {"llava": 1, "gemma3": 2}


def _tiny(family: str) -> Tiny:
    if family not in _MODELS:
        build = build_gemma if family == "gemma3" else BUILDERS[family]
        _MODELS[family] = build(layers=LAYERS)
    return _MODELS[family]


@pytest.mark.parametrize("family", sorted(STAGE_INPUTS))
@pytest.mark.parametrize(("samples", "ragged"), CASES)
def test_a_frozen_stage_adds_three_ops_per_layer(
    family: str, samples: list[Any], ragged: bool
) -> None:
    tiny = _tiny(family)
    inputs = tiny.prompt(samples)
    extra = {}
    for first in (4, 6):  # frozen from layer 4 (4 layers) and from 6 (2 layers)
        freeze = IVR.model_copy(update={"ssr_layer": first, "ssr_mode": "freeze"})
        extra[first] = _ops(tiny.model, freeze, inputs) - _ops(tiny.model, IVR, inputs)
    per_layer = (extra[4] - extra[6]) / 2
    assert per_layer <= PER_LAYER + ragged, (family, extra)  # + a ragged batch's where()
    assert extra[6] - 2 * per_layer <= PER_STAGE * STAGE_INPUTS[family]
