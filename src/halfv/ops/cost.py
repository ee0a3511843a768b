"""A cost model of one prefill: does a pruning stage pay for itself on this call?

Pure maths, no model and no tensors. A prefill costs **host** time (Python and kernel
launches, about the same for every token count) and **device** time (the kernels, which
grow with the rows each layer processes). On a GPU the two overlap: the host queues work
while the device runs earlier kernels, so a call takes about ``max(host, device)``; on a
CPU they add up. The model is

``time = max(H, D) + overlap * min(H, D)``

* ``D = sec_per_flop * matmul FLOPs + layer_device_s * L (+ stage_device_s per prune)``,
  the FLOPs of every layer from the rows it processes (:func:`layer_flops`);
* ``H = layer_host_s * L`` for the unpruned model, plus halfv's fixed host cost when a
  stage runs: ``call_host_s`` (the plan), ``prune_host_s`` per prune stage (scoring,
  selection, gathers), ``pruned_layer_host_s`` per layer after the first prune, and for a
  frozen stage ``freeze_host_s`` + ``frozen_layer_host_s`` per frozen layer;
* ``overlap`` is 1 on a CPU (serial) and near 0 on a GPU.

The constants of a device kind (``cpu``, ``cuda:NVIDIA H200``, ...) are fitted by
``benchmarks/calibrate_cost.py`` and shipped in ``cost_calibration.json`` next to this
module. :func:`choose` compares three options -- no pruning, the IVR stage alone, both
stages -- and keeps a stage only when its predicted saving, net of its fixed cost, is at
least ``min_gain`` of the time of the call it is added to (see docs/speed.md, "Cost
model").
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

from halfv.errors import ConfigError, HalfvValueError

__all__ = [
    "DEFAULT_CALIBRATION",
    "CallShape",
    "CostConstants",
    "CostDims",
    "CostModel",
    "GateDecision",
    "Option",
    "Prediction",
    "Schedule",
    "choose",
    "layer_flops",
    "predict",
    "terms",
]

#: the calibration shipped with halfv (fitted by benchmarks/calibrate_cost.py)
DEFAULT_CALIBRATION = Path(__file__).with_name("cost_calibration.json")
Option = Literal["none", "ivr", "all"]
OPTIONS: tuple[Option, ...] = ("none", "ivr", "all")


@dataclass(frozen=True)
class CostDims:
    """The language model's shape (what the FLOPs depend on)."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int


@dataclass(frozen=True)
class Schedule:
    """Where the stages are and what they compute."""

    ivr_layer: int
    ssr_layer: int | None
    ssr_mode: Literal["prune", "freeze", "none"]
    ivr_scores: bool = True
    ivr_features: bool = True
    ssr_scores: bool = True


@dataclass(frozen=True)
class CallShape:
    """One call, as the host knows it before any layer runs.

    Attributes:
        batch: samples.
        prompt: padded prompt length ``T`` (every row of it goes through each layer).
        visual: visual tokens per sample.
        ivr_kept: visual tokens per sample after the IVR stage.
        ssr_kept: after an SSR prune (equal to ``ivr_kept`` for freeze or none).
    """

    batch: int
    prompt: int
    visual: tuple[int, ...]
    ivr_kept: tuple[int, ...]
    ssr_kept: tuple[int, ...]


@dataclass(frozen=True)
class CostConstants:
    """Fitted constants of one device kind and dtype (seconds; see the module docstring)."""

    device_kind: str
    dtype: str
    overlap: float
    sec_per_flop: float
    layer_device_s: float
    layer_host_s: float
    call_host_s: float
    prune_host_s: float
    pruned_layer_host_s: float
    freeze_host_s: float
    frozen_layer_host_s: float
    stage_device_s: float
    source: str = ""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CostConstants:
        """Read one calibration entry (unknown keys are ignored, missing ones refused)."""
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n != "source" and n not in data]
        if missing:
            msg = f"cost calibration entry lacks {', '.join(missing)}: refit it"
            raise ConfigError(msg)
        return cls(**{n: data[n] for n in names if n in data})

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class Prediction:
    """Predicted host, device and total seconds of one option."""

    host_s: float
    device_s: float
    total_s: float


@dataclass(frozen=True)
class GateDecision:
    """What :func:`choose` decided for one call.

    Attributes:
        run_ivr, run_ssr: whether each stage runs.
        ivr_gain: predicted saving of the IVR stage alone, net of its cost, as a fraction of
            the unpruned call's predicted time (negative: it would slow the call down).
        ssr_gain: what the SSR stage saves, net of its cost, as a fraction of the IVR-only
            call's predicted time (``None`` without an SSR stage).
        predicted_ms: predicted time of each option (``none``, ``ivr``, ``all``).
        constants: the device kind and dtype of the calibration used.
    """

    run_ivr: bool
    run_ssr: bool
    ivr_gain: float
    ssr_gain: float | None
    predicted_ms: dict[str, float]
    constants: str


def layer_flops(dims: CostDims, query_rows: int, kv_rows: int) -> float:
    """Matmul FLOPs of one GQA + SwiGLU layer on one sample (as ``halfv.flops``' exact
    variant): Q, O and the MLP on the query rows, K and V on every key, causal attention
    with the queries last."""
    d, m = dims.hidden, dims.intermediate
    qw, kvw = dims.heads * dims.head_dim, dims.kv_heads * dims.head_dim
    pairs = query_rows * kv_rows - query_rows * (query_rows - 1) / 2
    return float(
        2 * query_rows * d * qw
        + 4 * kv_rows * d * kvw
        + 4 * qw * pairs
        + 2 * query_rows * qw * d
        + 6 * query_rows * d * m
    )


def _check_shape(shape: CallShape) -> None:
    sizes = {len(shape.visual), len(shape.ivr_kept), len(shape.ssr_kept)}
    if sizes != {shape.batch} or shape.batch < 1 or shape.prompt < 1:
        msg = f"CallShape {shape} is inconsistent: one visual count per sample, batch >= 1"
        raise HalfvValueError(msg)


#: the device terms of a call and the constant each is multiplied by
DEVICE_TERMS = {"flops": "sec_per_flop", "layers": "layer_device_s", "stages": "stage_device_s"}
#: the host terms of a call and their constants
HOST_TERMS = {
    "host_layers": "layer_host_s",
    "call": "call_host_s",
    "prunes": "prune_host_s",
    "pruned_layers": "pruned_layer_host_s",
    "freeze": "freeze_host_s",
    "frozen_layers": "frozen_layer_host_s",
}


def terms(dims: CostDims, shape: CallShape, schedule: Schedule, option: Option) -> dict[str, float]:
    """What a call does, counted: matmul FLOPs (the batch's, padded rows included), layers,
    prune stages, hooked and frozen layers. The model is linear in these
    (:data:`DEVICE_TERMS`, :data:`HOST_TERMS`), which is how calibrate_cost.py fits it."""
    _check_shape(shape)
    n_layers, t, d = dims.layers, shape.prompt, dims.hidden
    kv_width = dims.kv_heads * dims.head_dim
    text = [t - v for v in shape.visual]  # non-visual rows, padding included
    after_ivr = max(x + k for x, k in zip(text, shape.ivr_kept, strict=True))
    after_ssr = max(x + k for x, k in zip(text, shape.ssr_kept, strict=True))
    rows = [(t, t)] * n_layers
    out = dict.fromkeys((*DEVICE_TERMS, *HOST_TERMS), 0.0)
    out["layers"] = out["host_layers"] = float(n_layers)
    extra = 0.0
    if option != "none":
        first = schedule.ivr_layer
        rows[first:] = [(after_ivr, after_ivr)] * (n_layers - first)
        out["call"], out["prunes"], out["stages"] = 1.0, 1.0, 1.0
        out["pruned_layers"] = float(n_layers - first + 1)
        for v, k in zip(shape.visual, shape.ivr_kept, strict=True):
            extra += 2 * v * d * kv_width if schedule.ivr_scores else 0
            extra += 2 * d * v * k if schedule.ivr_features else 0
    ssr = schedule.ssr_layer
    if option == "all" and ssr is not None and schedule.ssr_mode == "prune":
        rows[ssr:] = [(after_ssr, after_ssr)] * (n_layers - ssr)
        out["prunes"] += 1.0
        out["stages"] += 1.0
        if schedule.ssr_scores:
            extra += sum(2 * k * d * kv_width for k in shape.ivr_kept)
    elif option == "all" and ssr is not None and schedule.ssr_mode == "freeze":
        rows[ssr:] = [(max(text), after_ivr)] * (n_layers - ssr)
        out["freeze"], out["frozen_layers"] = 1.0, float(n_layers - ssr)
    out["flops"] = shape.batch * sum(layer_flops(dims, q, kv) for q, kv in rows) + extra
    return out


def predict(
    constants: CostConstants,
    dims: CostDims,
    shape: CallShape,
    schedule: Schedule,
    option: Option,
) -> Prediction:
    """Predicted time of one call run with ``option`` (``none``: unpruned; ``ivr``: the
    IVR stage alone; ``all``: every stage of ``schedule``)."""
    counted = terms(dims, shape, schedule, option)
    device = sum(counted[k] * getattr(constants, c) for k, c in DEVICE_TERMS.items())
    host = sum(counted[k] * getattr(constants, c) for k, c in HOST_TERMS.items())
    total = max(host, device) + constants.overlap * min(host, device)
    return Prediction(host, device, total)


def choose(
    constants: CostConstants,
    dims: CostDims,
    shape: CallShape,
    schedule: Schedule,
    min_gain: float,
) -> GateDecision:
    """Which stages this call runs.

    The IVR stage is worth running alone when it saves at least ``min_gain`` of the
    unpruned time; both stages when together they do and adding the SSR stage saves at
    least ``min_gain`` of the IVR-only time. Of the options worth running, the fastest
    predicted one wins; if none is, the call runs unpruned.
    """
    times = {o: predict(constants, dims, shape, schedule, o).total_s for o in OPTIONS}
    base = times["none"]
    ivr_gain = (base - times["ivr"]) / base
    has_ssr = schedule.ssr_mode != "none" and schedule.ssr_layer is not None
    ssr_gain = (times["ivr"] - times["all"]) / times["ivr"] if has_ssr else None
    worth: list[Option] = ["none"]
    if ivr_gain >= min_gain:
        worth.append("ivr")
    all_gain = (base - times["all"]) / base
    if ssr_gain is not None and ssr_gain >= min_gain and all_gain >= min_gain:
        worth.append("all")
    if not has_ssr and "ivr" in worth:
        worth.append("all")  # the same call: IVR is the only stage
    best = min(worth, key=lambda o: (times[o], OPTIONS.index(o)))
    return GateDecision(
        run_ivr=best != "none",
        run_ssr=best == "all" and has_ssr,
        ivr_gain=ivr_gain,
        ssr_gain=ssr_gain,
        predicted_ms={o: 1e3 * s for o, s in times.items()},
        constants=f"{constants.device_kind} {constants.dtype}",
    )


class CostModel:
    """Calibrated constants per device kind and dtype, with a fallback order.

    ``constants_for('cuda:NVIDIA A100-SXM4-80GB', 'bfloat16')`` tries that kind and dtype,
    then the generic ``cuda`` entry of that dtype, then the kind with any dtype, then
    ``cuda`` with any dtype; ``None`` when nothing matches (the gate then never skips).
    """

    def __init__(self, entries: Sequence[CostConstants], source: str = "") -> None:
        self.entries = tuple(entries)
        self.source = source

    @classmethod
    def load(cls, path: str | Path) -> CostModel:
        """Read a calibration file (``{"entries": [...]}``, as calibrate_cost.py writes)."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            msg = f"cost calibration {str(path)!r} cannot be read: {exc}"
            raise ConfigError(msg) from exc
        entries = data.get("entries") if isinstance(data, dict) else None
        if not isinstance(entries, list):
            msg = f"cost calibration {str(path)!r} has no 'entries' list"
            raise ConfigError(msg)
        return cls([CostConstants.from_dict(e) for e in entries], source=str(path))

    @classmethod
    def default(cls) -> CostModel:
        """The calibration shipped with halfv."""
        return cls.load(DEFAULT_CALIBRATION)

    def constants_for(self, device_kind: str, dtype: str) -> CostConstants | None:
        """The best matching entry (see the class docstring)."""
        generic = device_kind.split(":", 1)[0]
        for kind, want in ((device_kind, dtype), (generic, dtype), (device_kind, None),
                           (generic, None)):  # fmt: skip
            for entry in self.entries:
                if entry.device_kind == kind and want in (None, entry.dtype):
                    return entry
        return None

    def __repr__(self) -> str:
        kinds = ", ".join(f"{e.device_kind} {e.dtype}" for e in self.entries)
        return f"CostModel({kinds})"
