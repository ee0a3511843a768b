"""Prefill FLOPs of a HalfV schedule, in two conventions, without loading a model.

* :mod:`halfv.flops.counts`: one :class:`LayerLoad` per decoder layer and the two formulas
  that price it (the FastV field convention and the exact GQA + SwiGLU count).
* :mod:`halfv.flops.report`: :func:`estimate` and :func:`flops_from_token_counts`, which
  return a :class:`FlopsReport`.
* :mod:`halfv.flops.model_specs`: the language-model dimensions of known checkpoints.

See ``docs/flops.md``.
"""

from __future__ import annotations

from halfv.flops.counts import (
    LayerLoad,
    exact_layer_flops,
    field_layer_flops,
    prefill_flops,
    schedule_loads,
)
from halfv.flops.report import FlopsReport, Stage, estimate, flops_from_token_counts

__all__ = [
    "FlopsReport",
    "LayerLoad",
    "Stage",
    "estimate",
    "exact_layer_flops",
    "field_layer_flops",
    "flops_from_token_counts",
    "prefill_flops",
    "schedule_loads",
]
