"""Prefill FLOPs per decoder layer of a HalfV schedule, in two conventions.

One :class:`LayerLoad` per decoder layer says how many rows and keys it processes;
:func:`schedule_loads` derives them from a :class:`~halfv.config.PruningConfig`,
:func:`~halfv.flops.report.flops_from_token_counts` from counts observed at run time. Two
formulas price a load:

* :func:`field_layer_flops` -- the FastV field convention ``4nd^2 + 2n^2d + 2ndm`` that
  token-pruning papers report (no GQA, two-matrix MLP, non-causal attention);
* :func:`exact_layer_flops` -- every matrix multiply of a GQA + SwiGLU decoder layer at 2
  FLOPs per multiply-add, causal attention, plus HalfV's own relevance and selection work.

Both count the language model's decoder layers during prefill only: the vision encoder,
projector, embeddings, norms, RoPE, softmax, activations, residual adds and the LM head
(prefill with ``logits_to_keep=1``) are left out. See ``docs/flops.md``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from halfv.config import PruningConfig
from halfv.errors import HalfvValueError
from halfv.flops.model_specs import ModelDims
from halfv.ops.budget import kept_count

__all__ = [
    "LayerLoad",
    "ResolvedSSRMode",
    "Variant",
    "exact_layer_flops",
    "field_layer_flops",
    "prefill_flops",
    "schedule_loads",
]

Variant = Literal["field", "exact"]
ResolvedSSRMode = Literal["prune", "freeze", "none"]
_RESOLVED_MODES: dict[str, ResolvedSSRMode] = {"prune": "prune", "freeze": "freeze", "none": "none"}


@dataclass(frozen=True)
class _PolicyCosts:
    """What the schedule's policies cost, read from the policies themselves."""

    ivr_scores: bool  # the IVR policy's needs_scores: a relevance pass before the IVR layer
    ivr_features: bool  # its needs_features: a farthest-point selection over the span
    anchor_share: float  # its attention_share option (0 without one): anchors skip the FPS
    ssr_scores: bool  # the SSR policy's needs_scores: a relevance pass before the SSR layer


def _policy_costs(config: PruningConfig, mode: ResolvedSSRMode) -> _PolicyCosts:
    """Resolve the IVR and SSR policies by name through the plugin registry (with their
    options, so a bad option fails here as it would in :func:`halfv.apply`)."""
    from halfv.plugins import get_ivr_policy, get_ssr_policy

    ivr = get_ivr_policy(config.ivr_policy, **config.ivr_policy_options)
    same_policy = mode == config.ssr_mode
    ssr_name = config.ssr_policy_name if same_policy else mode
    ssr = get_ssr_policy(ssr_name, **(config.ssr_policy_options if same_policy else {}))
    share = getattr(ivr, "attention_share", 0.0)
    return _PolicyCosts(
        ivr_scores=bool(ivr.needs_scores),
        ivr_features=bool(ivr.needs_features),
        anchor_share=float(share) if isinstance(share, int | float) else 0.0,
        ssr_scores=bool(ssr.needs_scores),
    )


def _check_count(name: str, value: object, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        msg = f"{name}={value!r} must be an int >= {minimum}"
        raise HalfvValueError(msg)
    return value


@dataclass(frozen=True)
class LayerLoad:
    """What one decoder layer processes during prefill.

    Attributes:
        query_tokens: rows through the Q projection, attention output, O projection and MLP.
        kv_tokens: keys/values in this layer, all of which get K and V projections. Must
            equal ``query_tokens + frozen_visual``.
        frozen_visual: frozen visual tokens: K/V projections only, no query, no MLP.
        relevance_keys: visual keys scored by a last-token relevance pass made before this
            layer (0: no pass). Counted by the exact variant only.
        selection_pairs: cosine evaluations of a farthest-point selection made before this
            layer, ``2 * d`` FLOPs each. Counted by the exact variant only.
        causal_pairs: (query, key) pairs attended; ``None`` assumes the query rows are the
            last ``query_tokens`` positions, giving ``q * kv - q * (q - 1) / 2``.
    """

    query_tokens: int
    kv_tokens: int
    frozen_visual: int = 0
    relevance_keys: int = 0
    selection_pairs: int = 0
    causal_pairs: int | None = None

    def __post_init__(self) -> None:
        for name in ("query_tokens", "frozen_visual", "relevance_keys", "selection_pairs"):
            _check_count(name, getattr(self, name))
        _check_count("kv_tokens", self.kv_tokens, minimum=1)
        if self.kv_tokens != self.query_tokens + self.frozen_visual:
            msg = (
                f"kv_tokens={self.kv_tokens} must equal query_tokens={self.query_tokens} + "
                f"frozen_visual={self.frozen_visual}: every key gets its K/V projection here"
            )
            raise HalfvValueError(msg)
        pairs, most = self.causal_pairs, self.query_tokens * self.kv_tokens
        if pairs is not None and _check_count("causal_pairs", pairs) > most:
            msg = f"causal_pairs={pairs} exceeds query_tokens * kv_tokens = {most}: pass <= {most}"
            raise HalfvValueError(msg)

    @property
    def attended_pairs(self) -> int:
        """(query, key) pairs of the causal attention, see :attr:`causal_pairs`."""
        if self.causal_pairs is not None:
            return self.causal_pairs
        q = self.query_tokens
        return q * self.kv_tokens - q * (q - 1) // 2


def field_layer_flops(dims: ModelDims, load: LayerLoad) -> int:
    """FastV field convention for one layer: ``4nd^2 + 2n*n_kv*d + 2ndm + 2*n_v*d^2``.

    ``n`` = query rows, ``n_kv`` = keys, ``n_v`` = frozen visual tokens. Without frozen
    tokens ``n_kv = n`` and this is FastV's ``4nd^2 + 2n^2d + 2ndm``; a frozen layer adds
    the method doc section 8.3 terms (text-to-all attention and visual K/V projections).
    Relevance and selection work is not counted.
    """
    d, m = dims.hidden_size, dims.intermediate_size
    n, n_kv, n_v = load.query_tokens, load.kv_tokens, load.frozen_visual
    return 4 * n * d * d + 2 * n * n_kv * d + 2 * n * d * m + 2 * n_v * d * d


def exact_layer_flops(dims: ModelDims, load: LayerLoad) -> int:
    """Matrix-multiply FLOPs of one GQA + SwiGLU layer (2 FLOPs per multiply-add).

    Q, O projections and the three-matrix MLP run on ``query_tokens`` rows; K and V on
    ``kv_tokens`` rows at ``num_kv_heads * head_dim`` width; scores and the weighted sum
    cost ``2 * H * head_dim`` per matrix per causal pair. Adds the relevance pass (one
    last-token query row, K projection of the scored keys, their dot products) and the
    selection's cosine evaluations.
    """
    d, m = dims.hidden_size, dims.intermediate_size
    q_width = dims.num_heads * dims.head_dim
    kv_width = dims.num_kv_heads * dims.head_dim
    n_q, n_kv = load.query_tokens, load.kv_tokens
    total = (
        2 * n_q * d * q_width  # Q projection
        + 2 * 2 * n_kv * d * kv_width  # K and V projections
        + 2 * 2 * q_width * load.attended_pairs  # QK^T and attention-weighted V
        + 2 * n_q * q_width * d  # O projection
        + 2 * 3 * n_q * d * m  # gate, up, down
    )
    r = load.relevance_keys
    if r:
        total += 2 * d * q_width + 2 * r * d * kv_width + 2 * q_width * r
    return total + 2 * d * load.selection_pairs


def prefill_flops(dims: ModelDims, loads: Iterable[LayerLoad], variant: Variant) -> float:
    """Sum the per-layer FLOPs of ``loads`` under ``variant`` ("field" or "exact")."""
    formulas = {"field": field_layer_flops, "exact": exact_layer_flops}
    if variant not in formulas:
        msg = f"variant={variant!r} is not a FLOPs variant: use 'field' or 'exact'"
        raise HalfvValueError(msg)
    return float(sum(formulas[variant](dims, load) for load in loads))


def _spans(visual_tokens: int | Sequence[int]) -> tuple[int, ...]:
    if isinstance(visual_tokens, int):
        return () if _check_count("visual_tokens", visual_tokens) == 0 else (visual_tokens,)
    return tuple(_check_count("visual span length", n, minimum=1) for n in visual_tokens)


def _resolve_mode(config: PruningConfig, ssr_mode: str | None) -> ResolvedSSRMode:
    mode: str = config.ssr_mode if ssr_mode is None else ssr_mode
    if mode == "auto":
        msg = (
            "config.ssr_mode='auto' is decided at run time by the saturation detector: pass "
            "ssr_mode='prune', 'freeze' or 'none' explicitly (see `halfv profile`)"
        )
        raise HalfvValueError(msg)
    resolved = _RESOLVED_MODES.get(mode)
    if resolved is None:
        msg = f"ssr_mode={mode!r} is not one of 'prune', 'freeze', 'none'"
        raise HalfvValueError(msg)
    if mode != "none" and config.ssr_layer is None:
        msg = f"ssr_mode={mode!r} needs config.ssr_layer; set it or use ssr_mode='none'"
        raise HalfvValueError(msg)
    if mode == "prune" and config.ssr_keep > config.ivr_keep:
        msg = f"ssr_keep={config.ssr_keep} > ivr_keep={config.ivr_keep}: use ssr_keep <= ivr_keep"
        raise HalfvValueError(msg)
    return resolved


def schedule_loads(
    num_layers: int,
    config: PruningConfig,
    visual_tokens: int | Sequence[int],
    text_tokens: int,
    ssr_mode: ResolvedSSRMode | None = None,
) -> list[LayerLoad]:
    """Per-layer loads of a prefill under ``config``.

    Args:
        num_layers: decoder layers of the language model.
        config: the schedule; each span keeps ``kept_count(N_i, ratio)`` tokens.
        visual_tokens: one span length, or one per span (0 or ``[]``: text only).
        text_tokens: non-visual prompt tokens.
        ssr_mode: overrides ``config.ssr_mode``; required when that is ``"auto"``.

    Raises:
        ValueError: a negative count, layers beyond ``num_layers``, an unresolved ``"auto"``,
            or an SSR mode without ``ssr_layer``.
    """
    spans = _spans(visual_tokens)
    text = _check_count("text_tokens", text_tokens)
    if text + sum(spans) == 0:
        msg = "the prompt has no tokens: pass text_tokens >= 1 or at least one visual span"
        raise HalfvValueError(msg)
    config.check_depth(num_layers)
    mode = _resolve_mode(config, ssr_mode)

    ivr = [kept_count(n, config.ivr_keep) for n in spans]
    ssr = [kept_count(n, config.ssr_keep) for n in spans] if mode == "prune" else ivr
    costs = _policy_costs(config, mode)
    cut = [(n, k) for n, k in zip(spans, ivr, strict=True) if k < n]
    ivr_rel = sum(n for n, _ in cut) if costs.ivr_scores else 0
    ivr_sel = 0
    if costs.ivr_features:
        for n, k in cut:
            if int(k * costs.anchor_share) < k:
                ivr_sel += n * k  # seeding + one row per farthest-point step: about N * K
    ssr_rel = sum(k for k, k2 in zip(ivr, ssr, strict=True) if k2 < k) if costs.ssr_scores else 0

    full, after_ivr, after_ssr = text + sum(spans), text + sum(ivr), text + sum(ssr)
    end = config.ssr_layer if mode != "none" and config.ssr_layer else num_layers
    loads: list[LayerLoad] = []
    for layer in range(num_layers):
        if layer < config.ivr_layer:
            rel = ivr_rel if layer == config.ivr_layer - 1 else 0
            loads.append(LayerLoad(full, full, relevance_keys=rel))
        elif layer < end:
            rel = ssr_rel if mode == "prune" and layer == end - 1 else 0
            sel = ivr_sel if layer == config.ivr_layer else 0
            loads.append(LayerLoad(after_ivr, after_ivr, relevance_keys=rel, selection_pairs=sel))
        elif mode == "prune":
            loads.append(LayerLoad(after_ssr, after_ssr))
        else:  # freeze: text rows only; the IVR survivors stay as keys
            loads.append(LayerLoad(text, after_ivr, frozen_visual=sum(ivr)))
    return loads
