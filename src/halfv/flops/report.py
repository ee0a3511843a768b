"""Full-model versus pruned prefill FLOPs of a schedule, or of a run's observed counts.

:func:`estimate` prices a :class:`~halfv.config.PruningConfig` before running anything;
:func:`flops_from_token_counts` prices the token counts the runtime saw in a prefill. Both
return a :class:`FlopsReport` (both conventions of :mod:`halfv.flops.counts`, grouped into
:class:`Stage` runs of layers with the same counts). See ``docs/flops.md``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from halfv.config import PruningConfig
from halfv.errors import HalfvValueError
from halfv.flops.counts import (
    LayerLoad,
    ResolvedSSRMode,
    prefill_flops,
    schedule_loads,
)
from halfv.flops.model_specs import ModelDims

__all__ = ["FlopsReport", "Stage", "estimate", "flops_from_token_counts"]


@dataclass(frozen=True)
class Stage:
    """A run of consecutive layers with the same token counts."""

    first_layer: int
    last_layer: int
    query_tokens: int
    kv_tokens: int
    frozen_visual: int


@dataclass(frozen=True)
class FlopsReport:
    """Full-model versus pruned prefill FLOPs, in both variants.

    Attributes:
        model: label of the model (``ModelDims.name``).
        full_loads: per-layer loads without pruning.
        pruned_loads: per-layer loads under the schedule.
        full_field, pruned_field: field-convention FLOPs.
        full_exact, pruned_exact: exact FLOPs (pruned includes relevance and selection).
    """

    model: str
    full_loads: tuple[LayerLoad, ...]
    pruned_loads: tuple[LayerLoad, ...]
    full_field: float
    pruned_field: float
    full_exact: float
    pruned_exact: float

    @classmethod
    def from_loads(
        cls, dims: ModelDims, full: Sequence[LayerLoad], pruned: Sequence[LayerLoad]
    ) -> FlopsReport:
        """Evaluate both variants on ``full`` and ``pruned`` loads."""
        return cls(
            model=dims.name,
            full_loads=tuple(full),
            pruned_loads=tuple(pruned),
            full_field=prefill_flops(dims, full, "field"),
            pruned_field=prefill_flops(dims, pruned, "field"),
            full_exact=prefill_flops(dims, full, "exact"),
            pruned_exact=prefill_flops(dims, pruned, "exact"),
        )

    @property
    def speedup_field(self) -> float:
        """``full_field / pruned_field``."""
        return self.full_field / self.pruned_field

    @property
    def speedup_exact(self) -> float:
        """``full_exact / pruned_exact``."""
        return self.full_exact / self.pruned_exact

    @property
    def query_tokens(self) -> tuple[int, ...]:
        """Query rows per layer under the schedule."""
        return tuple(load.query_tokens for load in self.pruned_loads)

    @property
    def kv_tokens(self) -> tuple[int, ...]:
        """Keys per layer under the schedule."""
        return tuple(load.kv_tokens for load in self.pruned_loads)

    def stages(self) -> list[Stage]:
        """Group the pruned loads into runs of equal token counts."""
        out: list[Stage] = []
        for i, load in enumerate(self.pruned_loads):
            key = (load.query_tokens, load.kv_tokens, load.frozen_visual)
            if out and (out[-1].query_tokens, out[-1].kv_tokens, out[-1].frozen_visual) == key:
                out[-1] = Stage(out[-1].first_layer, i, *key)
            else:
                out.append(Stage(i, i, *key))
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (FLOPs, speedups, stages, per-layer token counts)."""
        variants = {
            "field": (self.full_field, self.pruned_field, self.speedup_field),
            "exact": (self.full_exact, self.pruned_exact, self.speedup_exact),
        }
        return {
            "model": self.model,
            **{
                k: dict(zip(("full", "pruned", "speedup"), v, strict=True))
                for k, v in variants.items()
            },
            "stages": [asdict(stage) for stage in self.stages()],
            "query_tokens": list(self.query_tokens),
            "kv_tokens": list(self.kv_tokens),
        }


def estimate(
    dims: ModelDims,
    config: PruningConfig,
    visual_tokens: int | Sequence[int],
    text_tokens: int,
    ssr_mode: ResolvedSSRMode | None = None,
) -> FlopsReport:
    """FLOPs of one prefill under ``config`` versus the unpruned model.

    Example:
        >>> from halfv.model_specs import get_model_spec
        >>> spec = get_model_spec("qwen2.5-vl-7b")
        >>> round(estimate(spec.dims, spec.schedule, 4000, 60).speedup_field, 2)
        4.08
    """
    pruned = schedule_loads(dims.num_layers, config, visual_tokens, text_tokens, ssr_mode)
    total = pruned[0].kv_tokens
    return FlopsReport.from_loads(dims, [LayerLoad(total, total)] * dims.num_layers, pruned)


def flops_from_token_counts(
    dims: ModelDims,
    query_tokens: Sequence[int],
    kv_tokens: Sequence[int] | None = None,
    *,
    relevance_keys: Mapping[int, int] | None = None,
    selection_pairs: Mapping[int, int] | None = None,
) -> FlopsReport:
    """Report the FLOPs of a prefill that was actually served, from observed counts.

    Args:
        dims: model dimensions; ``len(query_tokens)`` must be ``dims.num_layers``.
        query_tokens: rows each layer ran through Q/O/MLP.
        kv_tokens: keys each layer held (default: ``query_tokens``); the difference is
            counted as frozen visual tokens.
        relevance_keys: ``{layer: keys scored before that layer}`` for relevance passes.
        selection_pairs: ``{layer: cosine evaluations}`` for selections before that layer.

    Raises:
        ValueError: lengths differ from ``dims.num_layers``, or a count is invalid.
    """
    kv = list(query_tokens) if kv_tokens is None else list(kv_tokens)
    if len(query_tokens) != dims.num_layers or len(kv) != dims.num_layers:
        msg = (
            f"got {len(query_tokens)} query and {len(kv)} kv counts for {dims.name!r} with "
            f"{dims.num_layers} layers: pass one count per decoder layer"
        )
        raise HalfvValueError(msg)
    bad = [i for i, (q, k) in enumerate(zip(query_tokens, kv, strict=True)) if k < q]
    if bad:
        msg = (
            f"layer {bad[0]} has fewer kv tokens than query tokens: kv_tokens[i] >= query_tokens[i]"
        )
        raise HalfvValueError(msg)
    rel, sel = dict(relevance_keys or {}), dict(selection_pairs or {})
    for layer in (*rel, *sel):
        if not 0 <= layer < dims.num_layers:
            msg = f"layer {layer} is out of range: use 0 <= layer < {dims.num_layers}"
            raise HalfvValueError(msg)
    pruned = [
        LayerLoad(q, k, k - q, rel.get(i, 0), sel.get(i, 0))
        for i, (q, k) in enumerate(zip(query_tokens, kv, strict=True))
    ]
    total = max(kv)  # layer 0 always sees the whole prompt
    return FlopsReport.from_loads(dims, [LayerLoad(total, total)] * dims.num_layers, pruned)
