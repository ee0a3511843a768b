"""Validated configuration of a HalfV pruning schedule.

A :class:`PruningConfig` says *where* (layer indices), *how much* (keep ratios) and *how*
(policy and estimator names) visual tokens are removed. It is a frozen pydantic model with
``extra="forbid"``, so a misspelt field or an out-of-range value fails at construction with
a message that names the field, the value and the allowed range.

Budget convention (one for the whole project): a visual span of ``N`` tokens keeps
``max(1, floor(N * keep))`` tokens, and every ratio -- ``ivr_keep`` *and* ``ssr_keep`` -- is
a fraction of the span's **original** ``N``. See :func:`halfv.budget.kept_count`.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from halfv.errors import ConfigError, ConfigFileNotFoundError

__all__ = ["CONFIG_SCHEMA_VERSION", "PruningConfig", "SSRMode", "load_config", "save_config"]

CONFIG_SCHEMA_VERSION: Literal[1] = 1

SSRMode = Literal["prune", "freeze", "none", "auto"]


class PruningConfig(BaseModel):
    """A HalfV schedule: one IVR prune at a shallow layer, one SSR action at a deep one.

    Layer indices count decoder layers of the language model from 0. ``ivr_layer = L``
    means layers ``0..L-1`` see every visual token and layers ``L..`` see the IVR
    survivors; the relevance scores come from layer ``L-1``. The same holds for
    ``ssr_layer``.

    Example:
        >>> PruningConfig(ivr_layer=2, ivr_keep=0.25, ssr_layer=21, ssr_mode="prune", ssr_keep=0.05)
        PruningConfig(schema_version=1, ivr_layer=2, ivr_keep=0.25, ...)
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    schema_version: Literal[1] = Field(
        CONFIG_SCHEMA_VERSION, description="Version of this schema; bumped on breaking changes."
    )
    ivr_layer: int = Field(
        2, ge=1, description="First decoder layer that sees only the IVR survivors (>= 1)."
    )
    ivr_keep: float = Field(
        0.25,
        gt=0.0,
        le=1.0,
        description="Fraction of each visual span kept at the IVR layer, in (0, 1].",
    )
    attention_share: float = Field(
        0.1,
        ge=0.0,
        le=1.0,
        description="Share of the IVR budget filled by top-relevance anchors, in [0, 1]; "
        "the rest is filled by farthest-point diversity.",
    )
    ivr_policy: str = Field("halfv", min_length=1, description="Registered IVR policy name.")
    ivr_policy_options: dict[str, Any] = Field(
        default_factory=dict, description="Extra options passed to the IVR policy."
    )
    ssr_layer: int | None = Field(
        None,
        ge=2,
        description="First decoder layer of the SSR stage; required unless ssr_mode is 'none'.",
    )
    ssr_mode: SSRMode = Field(
        "none",
        description="'prune' keeps top-relevance tokens, 'freeze' stops visual updates, "
        "'none' does nothing, 'auto' asks the backbone's saturation detector.",
    )
    ssr_keep: float = Field(
        0.05,
        gt=0.0,
        le=1.0,
        description="For ssr_mode='prune': fraction of the ORIGINAL visual span kept, in (0, 1].",
    )
    estimator: str = Field("tme", min_length=1, description="Registered entropy estimator name.")
    estimator_options: dict[str, Any] = Field(
        default_factory=dict, description="Options passed to the entropy estimator."
    )
    relevance_scaling: bool = Field(
        False,
        description="Divide relevance logits by sqrt(head_dim). The HalfV release does not "
        "(default False); True gives standard attention temperature.",
    )

    @model_validator(mode="after")
    def _check_schedule(self) -> PruningConfig:
        if self.ssr_mode != "none" and self.ssr_layer is None:
            msg = (
                f"ssr_mode={self.ssr_mode!r} needs ssr_layer: set ssr_layer to a decoder layer "
                f"index greater than ivr_layer={self.ivr_layer}, or set ssr_mode='none'"
            )
            raise ConfigError(msg)
        if self.ssr_layer is not None and self.ssr_layer <= self.ivr_layer:
            msg = (
                f"ssr_layer={self.ssr_layer} must be greater than ivr_layer={self.ivr_layer}: "
                "the SSR stage starts after the IVR prune"
            )
            raise ConfigError(msg)
        if self.ssr_mode == "prune" and self.ssr_keep > self.ivr_keep:
            msg = (
                f"ssr_keep={self.ssr_keep} exceeds ivr_keep={self.ivr_keep}: both are fractions "
                "of the original visual span, so SSR could not prune anything; use "
                "ssr_keep <= ivr_keep"
            )
            raise ConfigError(msg)
        return self

    @property
    def ssr_active(self) -> bool:
        """True when the schedule does something at ``ssr_layer``."""
        return self.ssr_mode != "none" and self.ssr_layer is not None

    def check_depth(self, num_layers: int) -> None:
        """Reject layer indices that a model with ``num_layers`` decoder layers does not have."""
        if self.ivr_layer >= num_layers:
            msg = (
                f"ivr_layer={self.ivr_layer} is out of range for a model with {num_layers} decoder "
                f"layers: use 1 <= ivr_layer < {num_layers}"
            )
            raise ConfigError(msg)
        if self.ssr_layer is not None and self.ssr_layer >= num_layers:
            msg = (
                f"ssr_layer={self.ssr_layer} is out of range for a model with {num_layers} decoder "
                f"layers: use ivr_layer < ssr_layer < {num_layers}"
            )
            raise ConfigError(msg)


def load_config(path: str | Path) -> PruningConfig:
    """Read a :class:`PruningConfig` from a ``.json`` or ``.toml`` file.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the suffix is neither ``.json`` nor ``.toml``, or the content is invalid
            (a :class:`pydantic.ValidationError`, which is a ``ValueError``).
    """
    path = Path(path)
    if not path.is_file():
        msg = f"config file {str(path)!r} does not exist"
        raise ConfigFileNotFoundError(msg)
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        data = json.loads(text)
    elif path.suffix == ".toml":
        data = tomllib.loads(text)
    else:
        msg = f"config file {str(path)!r} has suffix {path.suffix!r}: use .json or .toml"
        raise ConfigError(msg)
    if isinstance(data, dict) and "pruning" in data and isinstance(data["pruning"], dict):
        data = data["pruning"]  # calibration reports nest the config under "pruning"
    return PruningConfig.model_validate(data)


def save_config(config: PruningConfig, path: str | Path) -> Path:
    """Write ``config`` as JSON atomically (a temporary file renamed into place)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(config.model_dump_json(indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path
