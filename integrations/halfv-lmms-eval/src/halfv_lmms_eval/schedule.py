"""Turn lmms-eval ``--model_args`` into a halfv schedule (no lmms-eval import here).

``halfv=off`` (or ``false``/``0``) runs the model unpruned. Otherwise the schedule is, in
order: the adapter's default schedule for the loaded backbone, replaced by the file named
in ``halfv_config`` (a ``PruningConfig`` ``.toml``/``.json``, or the report ``halfv
calibrate`` writes), then overridden field by field by inline ``halfv_<field>`` arguments
(``halfv_ivr_layer=2,halfv_ivr_keep=0.25,halfv_ssr_mode=none``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

import halfv

__all__ = [
    "SCHEDULE_FIELDS",
    "ScheduleArgs",
    "parse_switch",
    "resolve_schedule",
    "split_halfv_args",
]

#: PruningConfig fields that ``halfv_<field>`` model arguments may set
SCHEDULE_FIELDS: tuple[str, ...] = tuple(
    name for name in halfv.PruningConfig.model_fields if name != "schema_version"
)
_ON = {"on", "true", "1", "yes"}
_OFF = {"off", "false", "0", "no"}


class ScheduleArgs:
    """The ``halfv*`` model arguments of one lmms-eval model."""

    def __init__(
        self,
        switch: object = "on",
        config: str | None = None,
        inline: Mapping[str, Any] | None = None,
    ) -> None:
        self.enabled = parse_switch(switch)
        self.config = None if config is None else Path(config)
        self.inline = dict(inline or {})
        if not self.enabled and (self.config is not None or self.inline):
            given = ([f"halfv_config={config}"] if config is not None else []) + [
                f"halfv_{k}={v}" for k, v in self.inline.items()
            ]
            msg = (
                f"halfv=off runs the unpruned model, but schedule arguments were given "
                f"({', '.join(given)}): drop them, or drop halfv=off to prune"
            )
            raise ValueError(msg)


def parse_switch(value: object) -> bool:
    """``halfv=on|off`` (lmms-eval turns ``true``/``false``/``1``/``0`` into bool/int)."""
    text = str(value).strip().lower()
    if text in _ON:
        return True
    if text in _OFF:
        return False
    msg = f"halfv={value!r} is not a switch: use halfv=on (prune, the default) or halfv=off"
    raise ValueError(msg)


def split_halfv_args(kwargs: dict[str, Any]) -> ScheduleArgs:
    """Pop every ``halfv*`` key from ``kwargs`` and return them as :class:`ScheduleArgs`.

    Raises:
        ValueError: an unknown ``halfv_*`` name, or a value that cannot be parsed.
    """
    switch = kwargs.pop("halfv", "on")
    config = kwargs.pop("halfv_config", None)
    inline: dict[str, Any] = {}
    for key in [k for k in kwargs if k.startswith("halfv_")]:
        value = kwargs.pop(key)
        name = key.removeprefix("halfv_")
        if name not in SCHEDULE_FIELDS:
            valid = ", ".join(f"halfv_{f}" for f in SCHEDULE_FIELDS)
            msg = (
                f"unknown model argument {key}={value!r}: use halfv, halfv_config or one of {valid}"
            )
            raise ValueError(msg)
        if name.endswith("_options") and isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                msg = f"{key}={value!r} is not a JSON object: write it as {key}='{{\"k\": 1}}'"
                raise ValueError(msg) from exc
        inline[name] = value
    return ScheduleArgs(switch, None if config is None else str(config), inline)


def resolve_schedule(model: nn.Module, args: ScheduleArgs) -> halfv.PruningConfig | None:
    """The schedule to apply to ``model``, or ``None`` for ``halfv=off``."""
    if not args.enabled:
        return None
    if args.config is not None:
        base = halfv.load_config(args.config)
    else:
        base = halfv.get_adapter_for(model).default_config(model)
    schedule = base
    if args.inline:
        schedule = halfv.PruningConfig.model_validate({**base.model_dump(), **args.inline})
    # An accuracy run measures the schedule on every call: the per-call cost gate
    # (min_gain) is off unless the config file or the model args set it.
    explicit = "min_gain" in (args.inline or {}) or (
        args.config is not None and "min_gain" in base.model_fields_set
    )
    return schedule if explicit else schedule.model_copy(update={"min_gain": None})
