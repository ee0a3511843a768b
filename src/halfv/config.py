"""Validated configuration of a HalfV pruning schedule.

A :class:`PruningConfig` says *where* (layer indices), *how much* (keep ratios) and *how*
(policy and estimator names) visual tokens are removed. It is a frozen pydantic model with
``extra="forbid"``, so a misspelt field or an out-of-range value fails at construction with
a message that names the field, the value and the allowed range.

Budget convention (one for the whole project): a visual span of ``N`` tokens keeps
``max(1, floor(N * keep))`` tokens, and every ratio -- ``ivr_keep`` *and* ``ssr_keep`` -- is
a fraction of the span's **original** ``N``. See :func:`halfv.ops.budget.kept_count`.
"""

from __future__ import annotations

import json
import tomllib
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from halfv.errors import (
    ConfigError,
    ConfigFileNotFoundError,
    ConfigTypeError,
    PluginLoadError,
    UnknownComponentError,
)

__all__ = [
    "CONFIG_SCHEMA_VERSION",
    "PruningConfig",
    "SSRMode",
    "coerce_config",
    "load_config",
    "save_config",
    "validation_message",
]

CONFIG_SCHEMA_VERSION: Literal[1] = 1

SSRMode = Literal["prune", "freeze", "none", "auto"]
_ACCEPTED = "a PruningConfig, a dict of its fields, a path to a .json or .toml file, or None"


def _ivr_policy_fields(name: str) -> set[str] | None:
    """Option names the registered IVR policy ``name`` accepts; ``None`` if it is unknown."""
    from halfv.plugins import get_components

    try:
        return set(get_components().ivr_policies.get(name).model_fields)
    except (UnknownComponentError, PluginLoadError):
        return None


def _ssr_policy_mode(name: str) -> str:
    """The ``mode`` of the registered SSR policy ``name`` (errors name the registered ones)."""
    from halfv.plugins import get_components

    return str(get_components().ssr_policies.get(name).mode)


def _move_attention_share(data: dict[str, Any]) -> dict[str, Any]:
    """Deprecated top-level ``attention_share`` -> ``ivr_policy_options`` (with a warning).

    It moves when the IVR policy accepts an ``attention_share`` option (or is not registered,
    so that creating it reports the name); for a policy without that option it was always
    ignored, and still is.
    """
    share = data.pop("attention_share")
    policy = data.get("ivr_policy", "halfv")
    raw_options = data.get("ivr_policy_options") or {}
    if not isinstance(raw_options, Mapping):
        return data  # field validation reports the bad ivr_policy_options
    fields = _ivr_policy_fields(policy) if isinstance(policy, str) else None
    if fields is not None and "attention_share" not in fields:
        where = f"ignored: IVR policy {policy!r} has no such option"
    elif "attention_share" in raw_options and raw_options["attention_share"] != share:
        msg = (
            f"attention_share={share!r} (top level, deprecated) contradicts "
            f"ivr_policy_options['attention_share']={raw_options['attention_share']!r}: "
            "drop the top-level field"
        )
        raise ConfigError(msg)
    else:
        data["ivr_policy_options"] = {"attention_share": share, **raw_options}
        where = "moved into ivr_policy_options"
    warnings.warn(
        f"top-level attention_share={share!r} is deprecated ({where}): write "
        f"ivr_policy_options = {{'attention_share': {share!r}}} instead",
        DeprecationWarning,
        stacklevel=2,
    )
    return data


def validation_message(exc: ValidationError) -> str:
    """One line for a pydantic error: ``field=value: problem`` per error, ``;``-joined.

    An unknown key of a :class:`PruningConfig` also lists the accepted field names.
    """
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "(top level)"
        if error["type"] == "extra_forbidden":
            part = f"unknown key {where!r}"
            if exc.title == PruningConfig.__name__:
                part += f" (accepted: {', '.join(sorted(PruningConfig.model_fields))})"
            parts.append(part)
        else:
            parts.append(f"{where}={error.get('input')!r}: {error['msg']}")
    return "; ".join(parts)


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
    ivr_policy: str = Field("halfv", min_length=1, description="Registered IVR policy name.")
    ivr_policy_options: dict[str, Any] = Field(
        default_factory=dict,
        description="Options of the IVR policy, validated by the policy itself (e.g. "
        "{'attention_share': 0.2} for 'halfv'); see `halfv plugins` and docs/policies.md.",
    )
    ssr_layer: int | None = Field(
        None,
        ge=2,
        description="First decoder layer of the SSR stage; required unless ssr_mode is 'none'.",
    )
    ssr_mode: SSRMode = Field(
        "none",
        description="What the SSR stage does: 'prune' keeps top-relevance tokens, 'freeze' "
        "stops visual updates, 'none' does nothing, 'auto' asks the backbone's saturation "
        "detector. With ssr_policy set it is the policy's own mode (filled in for you).",
    )
    ssr_policy: str | None = Field(
        None,
        min_length=1,
        description="Registered SSR policy name (built-in or from a plugin); its `mode` "
        "attribute says whether it prunes or freezes. None: the built-in policy named "
        "after ssr_mode.",
    )
    ssr_policy_options: dict[str, Any] = Field(
        default_factory=dict, description="Options of the SSR policy, validated by the policy."
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
    min_gain: float | None = Field(
        0.05,
        ge=0.0,
        lt=1.0,
        description="Skip a stage on a call where the cost model predicts it saves less than "
        "this fraction of the prefill time it is added to, net of its own cost (e.g. one small "
        "image on a GPU); None never skips. The environment variable HALFV_MIN_GAIN=off|<fraction> "
        "overrides it. See docs/speed.md, 'Cost model'.",
    )
    video_budget: Literal["per_video", "per_frame"] = Field(
        "per_video",
        description="How a video's visual tokens are budgeted: 'per_video' (all its frames "
        "share one budget and one selection) or 'per_frame' (every frame keeps the same "
        "share). Images are one budget each either way. See docs/video.md.",
    )
    relevance_scaling: bool = Field(
        False,
        description="Divide relevance logits by sqrt(head_dim). The HalfV release does not "
        "(default False); True gives standard attention temperature.",
    )

    @model_validator(mode="before")
    @classmethod
    def _migrate(cls, data: Any) -> Any:
        """Move the deprecated top-level ``attention_share`` into ``ivr_policy_options`` and
        take ``ssr_mode`` from the ``ssr_policy``'s own ``mode``."""
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        if "attention_share" in data:
            data = _move_attention_share(data)
        policy = data.get("ssr_policy")
        if isinstance(policy, str) and policy:
            mode = _ssr_policy_mode(policy)
            given = data.get("ssr_mode")
            if given == "auto":
                msg = (
                    f"ssr_mode='auto' lets the saturation detector pick the built-in 'prune' or "
                    f"'freeze' policy, so it cannot be combined with ssr_policy={policy!r}: "
                    "drop one of them"
                )
                raise ConfigError(msg)
            if given is not None and given != mode:
                msg = (
                    f"ssr_mode={given!r} contradicts ssr_policy={policy!r}, whose mode is "
                    f"{mode!r}: drop ssr_mode (the policy's mode is used) or pick another policy"
                )
                raise ConfigError(msg)
            data["ssr_mode"] = mode
        return data

    @field_validator("video_budget", mode="before")
    @classmethod
    def _check_video_budget(cls, value: Any) -> Any:
        if value not in ("per_video", "per_frame"):
            msg = (
                f"video_budget={value!r} is not a video budget mode: use 'per_video' (all "
                "frames of a video share one budget) or 'per_frame' (every frame keeps the "
                "same share)"
            )
            raise ConfigError(msg)  # a ValueError: pydantic reports it for the field
        return value

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
    def attention_share(self) -> float:
        """Deprecated: read ``ivr_policy_options['attention_share']`` (or the policy's default).

        Kept so code written against the old top-level field keeps working.
        """
        warnings.warn(
            "PruningConfig.attention_share is deprecated: the option belongs to the IVR "
            "policy, read config.ivr_policy_options.get('attention_share')",
            DeprecationWarning,
            stacklevel=2,
        )
        if "attention_share" in self.ivr_policy_options:
            return float(self.ivr_policy_options["attention_share"])
        from halfv.plugins import get_components

        field = (
            get_components().ivr_policies.get(self.ivr_policy).model_fields.get("attention_share")
        )
        if field is None:
            msg = f"IVR policy {self.ivr_policy!r} has no attention_share option"
            raise ConfigError(msg)
        return float(field.default)

    @property
    def ssr_policy_name(self) -> str:
        """The SSR policy to resolve: ``ssr_policy``, else the built-in named after
        ``ssr_mode`` (``'auto'`` resolves to ``'prune'`` until the detector decides)."""
        if self.ssr_policy is not None:
            return self.ssr_policy
        return "prune" if self.ssr_mode == "auto" else self.ssr_mode

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

    Calibration reports that nest the config under ``"pruning"`` are accepted too.

    Raises:
        ConfigFileNotFoundError: the path does not exist or is a directory.
        ConfigError: the suffix is neither ``.json`` nor ``.toml``, the file does not parse,
            or a field is invalid; the message names the file, the field, the bad value
            and what is accepted.
        ConfigTypeError: the file holds something other than a table/object of fields.
    """
    path = Path(path)
    where = f"config file {str(path)!r}"
    if path.is_dir():
        msg = f"{where} is a directory: pass the .json or .toml file itself"
        raise ConfigFileNotFoundError(msg)
    if not path.is_file():
        msg = f"{where} does not exist: pass the path of a .json or .toml file"
        raise ConfigFileNotFoundError(msg)
    if path.suffix not in {".json", ".toml"}:
        msg = f"{where} has suffix {path.suffix!r}: use .json or .toml"
        raise ConfigError(msg)
    try:
        text = path.read_text(encoding="utf-8")
        data: Any = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except json.JSONDecodeError as exc:
        msg = f"{where} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        raise ConfigError(msg) from exc
    except tomllib.TOMLDecodeError as exc:
        msg = f"{where} is not valid TOML: {exc}"
        raise ConfigError(msg) from exc
    except UnicodeDecodeError as exc:
        msg = f"{where} is not UTF-8 text ({exc.reason} at byte {exc.start}): save it as UTF-8"
        raise ConfigError(msg) from exc
    if isinstance(data, dict) and "pruning" in data and isinstance(data["pruning"], dict):
        data = data["pruning"]  # calibration reports nest the config under "pruning"
    if not isinstance(data, dict):
        msg = (
            f"{where} holds a {type(data).__name__} ({data!r:.60}), not a table of "
            'PruningConfig fields: write e.g. {"ivr_layer": 2, "ivr_keep": 0.25}'
        )
        raise ConfigTypeError(msg)
    return _validate(data, where)


def _validate(data: Mapping[str, Any], source: str) -> PruningConfig:
    try:
        return PruningConfig.model_validate(data)
    except ValidationError as exc:
        msg = f"{source}: {validation_message(exc)}"
        raise ConfigError(msg) from exc


def coerce_config(config: object) -> PruningConfig:
    """A :class:`PruningConfig` from any form :func:`halfv.apply` accepts (not ``None``).

    Args:
        config: a :class:`PruningConfig`, a mapping of its fields, or a ``str``/``Path`` to
            a ``.json`` or ``.toml`` file.

    Raises:
        ConfigTypeError: ``config`` is none of these.
        ConfigError, ConfigFileNotFoundError: as :func:`load_config`; a mapping's errors
            name the field, the value and what is accepted.
    """
    if isinstance(config, PruningConfig):
        return config
    if isinstance(config, str | Path):
        return load_config(config)
    if isinstance(config, Mapping):
        bad = [k for k in config if not isinstance(k, str)]
        if bad:
            msg = f"config dict has non-string key {bad[0]!r}: field names are strings"
            raise ConfigTypeError(msg)
        return _validate(config, "config dict")
    msg = f"config={config!r} ({type(config).__name__}) is not a pruning config: pass {_ACCEPTED}"
    raise ConfigTypeError(msg)


def save_config(config: PruningConfig, path: str | Path) -> Path:
    """Write ``config`` as JSON atomically (a temporary file renamed into place)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(config.model_dump_json(indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path
