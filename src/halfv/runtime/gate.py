"""The per-call gate: run a pruning stage only where the cost model says it pays.

Before a prefill's first layer, the runtime knows on the host how many tokens each span
keeps at each stage. :class:`CostGate` turns that, the model's shape, the device kind
and the dtype into a :class:`halfv.ops.cost.CallShape` and asks
:func:`halfv.ops.cost.choose` which stages run. A call whose IVR stage is skipped runs
through the untouched model (bit-exact to no halfv at all); a call whose SSR stage is
skipped runs the IVR stage alone, exactly as a schedule with ``ssr_mode='none'`` would.

``PruningConfig.min_gain`` sets the threshold (``None``: never skip); the environment
variable ``HALFV_MIN_GAIN`` overrides it for a whole process (``off`` or a number).
Decisions are memoised per call shape, so a repeated shape costs a dict lookup.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from halfv.errors import ConfigError
from halfv.ops.budget import kept_count
from halfv.ops.cost import CallShape, CostDims, CostModel, GateDecision, Schedule, choose

if TYPE_CHECKING:
    from halfv.config import PruningConfig
    from halfv.ops.spans import VisualSpans

__all__ = ["ENV_MIN_GAIN", "CostGate", "GateReport", "StageGate", "device_kind", "env_min_gain"]

#: environment override of ``PruningConfig.min_gain``: ``off`` (never skip) or a number
ENV_MIN_GAIN = "HALFV_MIN_GAIN"
_MEMO_LIMIT = 512
_DEVICE_NAMES: dict[int, str] = {}


@dataclass(frozen=True)
class StageGate:
    """One stage of one call: whether it ran and its predicted gain, net of its cost (IVR:
    a fraction of the unpruned call's predicted time; SSR: of the IVR-only call's)."""

    stage: str
    layer: int
    ran: bool
    predicted_gain: float | None


@dataclass(frozen=True)
class GateReport:
    """What the gate decided for the last prefill (``handle.stats.gate``).

    Attributes:
        min_gain: the threshold in force (``None``: the gate was off, every stage ran).
        device_kind: e.g. ``cpu`` or ``cuda:NVIDIA H200``.
        constants: the calibration entry used (``""`` when there was none or the gate was off).
        stages: the IVR stage, then the SSR stage when the schedule has one.
        predicted_ms: predicted time of each option (``none``, ``ivr``, ``all``).
    """

    min_gain: float | None
    device_kind: str
    constants: str
    stages: tuple[StageGate, ...]
    predicted_ms: dict[str, float]

    @property
    def skipped(self) -> tuple[str, ...]:
        """Names of the stages the gate skipped."""
        return tuple(s.stage for s in self.stages if not s.ran)


def env_min_gain(configured: float | None, environ: Any = None) -> float | None:
    """``min_gain`` after the ``HALFV_MIN_GAIN`` override (``off``/``none``: ``None``)."""
    raw = (os.environ if environ is None else environ).get(ENV_MIN_GAIN)
    if raw is None or raw.strip() == "":
        return configured
    if raw.strip().lower() in {"off", "none", "never"}:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0.0 <= value < 1.0:
        msg = f"{ENV_MIN_GAIN}={raw!r}: use 'off' or a fraction in [0, 1)"
        raise ConfigError(msg)
    return value


def device_kind(device: torch.device) -> str:
    """``cpu``, ``cuda:<device name>`` or the device type."""
    if device.type != "cuda":
        return device.type
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _DEVICE_NAMES:
        _DEVICE_NAMES[index] = torch.cuda.get_device_name(index)
    return f"cuda:{_DEVICE_NAMES[index]}"


def dims_of(model: Any) -> CostDims | None:
    """The language model's shape, or ``None`` when its config does not say."""
    from halfv.errors import HalfvValueError
    from halfv.flops.model_specs import ModelDims

    try:
        dims = ModelDims.from_config(getattr(model, "config", None))
    except (HalfvValueError, TypeError, AttributeError):
        return None
    return CostDims(
        dims.hidden_size, dims.intermediate_size, dims.num_layers, dims.num_heads,
        dims.num_kv_heads, dims.head_dim,
    )  # fmt: skip


class CostGate:
    """Decides, per call, which stages of one runtime's schedule run."""

    def __init__(
        self,
        config: PruningConfig,
        schedule: Schedule,
        dims: CostDims | None,
        cost_model: CostModel | None,
    ) -> None:
        self.config = config
        self.schedule = schedule
        self.dims = dims
        self.cost_model = cost_model
        self._memo: dict[tuple[Any, ...], GateReport] = {}

    @property
    def min_gain(self) -> float | None:
        """The threshold in force (the config's, unless ``HALFV_MIN_GAIN`` is set)."""
        return env_min_gain(self.config.min_gain)

    def decide(
        self, spans: VisualSpans, device: torch.device, dtype: torch.dtype | None
    ) -> GateReport:
        """The gate's report for a call with these spans (memoised per shape)."""
        min_gain = self.min_gain
        kind = device_kind(device)
        b, t = (int(n) for n in spans.mask.shape)
        sizes = spans.span_sizes  # visual tokens per budget (span joiners excluded)
        key = (min_gain, kind, dtype, b, t, sizes)
        report = self._memo.get(key)
        if report is None:
            report = self._report(min_gain, kind, str(dtype).removeprefix("torch."), (b, t), sizes)
            if len(self._memo) >= _MEMO_LIMIT:
                self._memo.clear()
            self._memo[key] = report
        return report

    def _report(
        self,
        min_gain: float | None,
        kind: str,
        dtype: str,
        batch_prompt: tuple[int, int],
        sizes: tuple[tuple[int, ...], ...],
    ) -> GateReport:
        schedule, (batch, prompt) = self.schedule, batch_prompt
        constants = None
        if min_gain is not None and self.cost_model is not None and self.dims is not None:
            constants = self.cost_model.constants_for(kind, dtype)
        if constants is None or self.dims is None:
            return self._all_ran(min_gain, kind)
        cfg = self.config
        ssr_keep = cfg.ssr_keep if schedule.ssr_mode == "prune" else cfg.ivr_keep
        shape = CallShape(
            batch=batch,
            prompt=prompt,
            visual=tuple(sum(s) for s in sizes),
            ivr_kept=tuple(sum(kept_count(n, cfg.ivr_keep) for n in s) for s in sizes),
            ssr_kept=tuple(sum(kept_count(n, ssr_keep) for n in s) for s in sizes),
        )
        assert min_gain is not None  # constants are only looked up with a threshold
        decision = choose(constants, self.dims, shape, schedule, min_gain)
        return _report_of(decision, min_gain, kind, schedule)

    def _all_ran(self, min_gain: float | None, kind: str) -> GateReport:
        """Every stage runs: the gate is off (``min_gain`` None), or no calibration fits
        this device (``constants`` empty)."""
        stages = [StageGate("ivr", self.schedule.ivr_layer, True, None)]
        if self.schedule.ssr_mode != "none" and self.schedule.ssr_layer is not None:
            stages.append(StageGate("ssr", self.schedule.ssr_layer, True, None))
        return GateReport(min_gain, kind, "", tuple(stages), {})


def _report_of(
    decision: GateDecision, min_gain: float, kind: str, schedule: Schedule
) -> GateReport:
    stages = [StageGate("ivr", schedule.ivr_layer, decision.run_ivr, decision.ivr_gain)]
    if decision.ssr_gain is not None and schedule.ssr_layer is not None:
        stages.append(StageGate("ssr", schedule.ssr_layer, decision.run_ssr, decision.ssr_gain))
    return GateReport(
        min_gain, kind, decision.constants, tuple(stages), dict(decision.predicted_ms)
    )
