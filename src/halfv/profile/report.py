"""The profile report: JSON file, lifecycle plot, terminal table and suggested schedule.

A :class:`ProfileReport` holds the per-slot TME curves (whole, visual, text), the KL curve,
the detected :class:`~halfv.profile.lifecycle.Lifecycle`, what model it was measured on and
the model's default schedule. :func:`suggested_config` turns it into a ready-to-use
:class:`~halfv.config.PruningConfig` (``halfv calibrate``). Files are written atomically
(a temporary file in the same folder, renamed into place).
"""

from __future__ import annotations

import json
import math
import os
import textwrap
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from halfv.errors import HalfvFileNotFoundError, HalfvValueError, MissingDependencyError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from rich.console import Console

from halfv.config import PruningConfig, validation_message
from halfv.profile.lifecycle import Lifecycle

__all__ = [
    "PROFILE_SCHEMA_VERSION",
    "ModelInfo",
    "ProfileReport",
    "atomic_path",
    "suggested_config",
    "validation_message",
]

PROFILE_SCHEMA_VERSION = 1
_STAGE_COLOURS = ("#cfe3f7", "#fde2c4", "#d9f0d3")
_STAGE_NAMES = ("I: modality alignment", "II: global aggregation", "III: visual saturation")


class ModelInfo(BaseModel):
    """What the profile was measured on.

    Attributes:
        family: model family (``llava``, ``qwen2_5_vl``, ``internvl``) or ``model_type``.
        source: ``trained``, ``tiny-random`` or ``custom``.
        description: one line about the model.
        model_type: ``config.model_type``.
        num_layers: decoder layers ``L`` of the language model.
        hidden_size: its width.
        scored_layers: on a model with linear-attention layers, the layers that may prune
            after a scoring layer (the lifecycle's IVR and SSR layers are among them);
            ``None`` when every layer is an attention layer.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    family: str
    source: str
    description: str
    model_type: str
    num_layers: int = Field(ge=1)
    hidden_size: int = Field(ge=1)
    scored_layers: list[int] | None = None


class ProfileReport(BaseModel):
    """Everything ``halfv profile`` measured; serialised as ``profile.json``.

    Curves have ``L + 1`` values (slot ``i`` = input of layer ``i``; slot ``L`` = output
    of the last layer), ``None`` where the estimator returned NaN. ``kl`` has ``L`` values.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = 1
    halfv_version: str
    model: ModelInfo
    estimator: str
    estimator_options: dict[str, Any] = Field(default_factory=dict)
    prompt: str
    inputs: list[str]
    visual_tokens: list[int]
    text_tokens: list[int]
    whole: list[float | None]
    visual: list[float | None]
    text: list[float | None]
    kl: list[float] | None
    lifecycle: Lifecycle
    default_config: PruningConfig

    @property
    def n_inputs(self) -> int:
        """Number of inputs the curves average."""
        return len(self.inputs)

    @property
    def num_layers(self) -> int:
        """Decoder layers ``L``."""
        return self.model.num_layers

    def curve(self, group: str) -> list[float]:
        """A TME curve with ``None`` as NaN (``group``: whole, visual or text)."""
        values: list[float | None] = getattr(self, group)
        return [math.nan if v is None else float(v) for v in values]

    def to_json(self, path: str | Path) -> Path:
        """Write the report as JSON, atomically; returns the path."""
        with atomic_path(path) as tmp:
            tmp.write_text(self.model_dump_json(indent=2) + "\n", encoding="utf-8")
        return Path(path)

    @classmethod
    def from_json(cls, path: str | Path) -> ProfileReport:
        """Read a report written by :meth:`to_json`.

        Raises:
            FileNotFoundError: no such file.
            ValueError: not JSON, or not a profile report (the message names the field).
        """
        path = Path(path)
        if not path.is_file():
            msg = f"profile file {str(path)!r} does not exist: run `halfv profile` first"
            raise HalfvFileNotFoundError(msg)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            msg = f"profile file {str(path)!r} is not JSON ({exc}): pass a profile.json"
            raise HalfvValueError(msg) from exc
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            msg = f"profile file {str(path)!r} is not a halfv profile: {validation_message(exc)}"
            raise HalfvValueError(msg) from exc

    # ------------------------------------------------------------------ plot
    def plot(self, path: str | Path) -> Path:
        """Save the lifecycle plot as PNG (atomically); returns the path.

        Top panel: the three TME curves against depth (slot ``i`` at ``100 * i / L`` %),
        stages I-III shaded, suggested IVR and SSR layers as vertical lines. Bottom panel
        (when there is a KL curve): KL per layer on a log scale.

        Raises:
            ModuleNotFoundError: matplotlib is not installed (``pip install halfv[plot]``).
        """
        try:
            import matplotlib as mpl
        except ModuleNotFoundError as exc:
            msg = "plotting needs matplotlib: pip install 'halfv[plot]'"
            raise MissingDependencyError(msg) from exc
        mpl.use("Agg")
        from matplotlib import pyplot as plt

        num = self.num_layers
        life = self.lifecycle
        rows = 2 if self.kl is not None else 1
        fig, axes = plt.subplots(
            rows,
            1,
            figsize=(10.0, 6.4 if rows == 2 else 4.6),
            sharex=True,
            squeeze=False,
            gridspec_kw={"height_ratios": [3, 2] if rows == 2 else [1]},
        )
        ax = axes[0][0]
        for (first, last), colour, name in zip(
            life.stage_bounds, _STAGE_COLOURS, _STAGE_NAMES, strict=False
        ):
            lo = 100.0 * max(first - 0.5, 0) / num
            hi = 100.0 * min(last + 0.5, num) / num
            for panel in axes[:, 0]:
                panel.axvspan(lo, hi, color=colour, alpha=0.7, lw=0)
            ax.plot([], [], color=colour, lw=8, label=f"stage {name}")
            roman = name.split(":")[0]
            ax.text((lo + hi) / 2, 1.01, roman, transform=ax.get_xaxis_transform(), ha="center")
        depth = [100.0 * i / num for i in range(num + 1)]
        for group, style in (("whole", "-o"), ("visual", "-s"), ("text", "-^")):
            ax.plot(depth, self.curve(group), style, ms=3, lw=1.5, label=f"{group} tokens")
        marks: list[tuple[str, int, str]] = []
        if life.ivr_layer is not None:
            marks.append(("IVR", life.ivr_layer, "tab:red"))
        else:
            ax.text(
                0.5,
                0.97,
                "no lifecycle detected: no stages, no suggested layers",
                transform=ax.transAxes,
                ha="center",
                va="top",
                fontsize=10,
                color="dimgrey",
            )
        if life.ssr_layer is not None:
            marks.append(
                (f"SSR, {life.ssr_mode or 'mode not probed'},", life.ssr_layer, "tab:purple")
            )
        for label, layer, colour in marks:
            for panel in axes[:, 0]:
                panel.axvline(100.0 * layer / num, color=colour, ls="--", lw=1.2)
            ax.plot([], [], color=colour, ls="--", label=f"{label} layer {layer}")
        ax.set_ylabel(f"TME ({self.estimator} h1)")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        ax.grid(alpha=0.3)
        if self.kl is not None:
            _plot_kl(axes[1][0], self.kl, num)
        axes[-1][0].set_xlabel("layer depth (%)  [slot i at 100 i / L]")
        title = textwrap.shorten(self.model.description, 110, placeholder="...")
        fig.suptitle(f"{title}\n{self.n_inputs} input(s); halfv {self.halfv_version}", fontsize=9)
        fig.tight_layout()
        try:
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format="png", dpi=110)
        finally:
            plt.close(fig)
        return Path(path)

    # ------------------------------------------------------------------ table
    def render_table(self, console: Console) -> None:
        """Print the per-slot table and the suggested layers to a rich ``console``."""
        from rich.table import Table

        life = self.lifecycle
        table = Table(
            title=f"TME per layer slot ({self.estimator}); {self.n_inputs} input(s)",
            caption=f"slot i = input of layer i; slot {self.num_layers} = output of the last layer",
        )
        for column in ("slot", "depth", "stage", "whole", "visual", "text", "KL(layer)", "note"):
            table.add_column(column, justify="left" if column in ("stage", "note") else "right")
        stage_of = {
            slot: name.split(":")[0]
            for (first, last), name in zip(life.stage_bounds, _STAGE_NAMES, strict=False)
            for slot in range(first, last + 1)
        }
        for slot in range(self.num_layers + 1):
            note = []
            if slot == life.ivr_layer:
                note.append("IVR layer")
            if slot == life.ssr_layer:
                note.append(f"SSR layer ({life.ssr_mode or 'mode not probed'})")
            kl = f"{self.kl[slot]:.2e}" if self.kl is not None and slot < len(self.kl) else ""
            cells = [self.curve(g)[slot] for g in ("whole", "visual", "text")]
            table.add_row(
                str(slot),
                f"{100.0 * slot / self.num_layers:.0f}%",
                stage_of.get(slot, ""),
                *(_fmt(v) for v in cells),
                kl,
                ", ".join(note),
            )
        console.print(table)
        mode = life.ssr_mode or "mode not probed"
        ssr = "none" if life.ssr_layer is None else f"{life.ssr_layer} ({mode})"
        if life.detected:
            console.print(f"[bold]suggested layers:[/bold] IVR {life.ivr_layer}, SSR {ssr}")
        else:
            console.print(
                "[bold]no lifecycle detected:[/bold] the whole-sequence TME does not descend "
                f"enough; no layers suggested (SSR mode: {mode})"
            )
        console.print(f"[dim]rule: {life.rule}[/dim]")


def _plot_kl(ax: Axes, kl: list[float], num: int) -> None:
    """KL per layer on a log axis; zeros (e.g. the last layer) drawn at a floor."""
    depth = [100.0 * i / num for i in range(num)]
    floor = min((v for v in kl if v > 0), default=1e-12) / 10
    positive = [v if v > 0 else math.nan for v in kl]
    ax.semilogy(depth, positive, "-o", ms=3, color="tab:green", label="KL")
    zeros = [d for d, v in zip(depth, kl, strict=True) if v <= 0]
    if zeros:
        ax.plot(zeros, [floor] * len(zeros), "v", color="grey", label="KL = 0 (drawn at floor)")
    ax.set_ylabel("KL(skip layer's visual\nupdate || full)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.grid(alpha=0.3, which="both")


def _fmt(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.4f}"


def suggested_config(
    report: ProfileReport,
    base: PruningConfig | None = None,
    *,
    freeze_below: float | None = None,
    keep_ivr: bool = False,
    unsaturated: Literal["keep", "none"] = "keep",
) -> PruningConfig:
    """``base`` (default: the model's default schedule) with the profiled layers and mode.

    ``ivr_layer`` and ``ssr_layer`` come from the lifecycle; ``ssr_mode`` from the KL probe
    when it ran, else ``base.ssr_mode``; ratios, policies and estimator settings are kept.
    Without an SSR layer (a shallow model, a late knee) the result has ``ssr_mode='none'``.
    When no lifecycle was detected the base's layers are kept (only a probed SSR mode is
    applied, if the base has an SSR layer): check ``report.lifecycle.detected``.

    With ``freeze_below`` (opt-in) the SSR stage becomes ``freeze`` from the layer where
    the KL curve falls and stays below it (:func:`halfv.saturation.freeze_onset`), if there
    is one after the IVR layer; otherwise, with ``unsaturated="keep"`` the schedule above is
    kept, and with ``unsaturated="none"`` its SSR stage is dropped: the probe found no layer
    whose visual update the model can do without, so nothing is saturated. With ``keep_ivr`` the
    base's ``ivr_layer`` stays and only the SSR stage comes from the profile; when the
    profiled SSR layer is not after that IVR layer, the base's SSR layer is kept too (with
    the probed SSR mode, as for an undetected lifecycle).

    Raises:
        ValueError: the result does not fit the profiled model, or ``freeze_below`` is
            given for a profile without a KL curve (the message says why).
    """
    base = base or report.default_config
    life = report.lifecycle
    update: dict[str, Any] = {}
    ssr_fits = life.ssr_layer is None or not keep_ivr or life.ssr_layer > base.ivr_layer
    if life.detected and ssr_fits:
        update = {"ssr_layer": life.ssr_layer}
        if not keep_ivr:
            update["ivr_layer"] = life.ivr_layer
        if life.ssr_layer is None:
            update["ssr_mode"] = "none"
        elif life.ssr_mode is not None:
            update["ssr_mode"] = life.ssr_mode
    elif life.ssr_mode is not None and base.ssr_layer is not None:
        update["ssr_mode"] = life.ssr_mode
    try:
        config = PruningConfig.model_validate({**base.model_dump(), **update})
    except ValidationError as exc:
        msg = f"the suggested schedule is invalid: {validation_message(exc)}"
        raise HalfvValueError(msg) from exc
    config.check_depth(report.num_layers)
    if freeze_below is not None:
        config = _freeze_from_onset(report, config, freeze_below, unsaturated)
    return config


def _freeze_from_onset(
    report: ProfileReport,
    config: PruningConfig,
    threshold: float,
    unsaturated: Literal["keep", "none"],
) -> PruningConfig:
    from halfv.saturation import freeze_onset

    if report.kl is None:
        msg = "this profile has no KL curve: rerun halfv profile with --kl to place the freeze"
        raise HalfvValueError(msg)
    onset = freeze_onset(report.kl, threshold, first=config.ivr_layer + 1)
    if onset is None and unsaturated == "none":
        return PruningConfig.model_validate(
            {**config.model_dump(), "ssr_layer": None, "ssr_mode": "none"}
        )
    if onset is None:
        return config
    return PruningConfig.model_validate(
        {**config.model_dump(), "ssr_layer": onset, "ssr_mode": "freeze"}
    )


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    The caller writes the temporary file (created with the usual permissions). On an
    exception it is removed and ``path`` is left untouched.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
