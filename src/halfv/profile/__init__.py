"""``halfv profile``: measure the three-stage TME lifecycle of a VLM and suggest a schedule.

Per decoder-layer slot, the TME of the whole sequence, the visual tokens and the text
tokens (:mod:`~halfv.profile.collect`); the KL layer-redundancy curve; stage detection
(:mod:`~halfv.profile.lifecycle`, pure); a JSON report, a PNG plot and a terminal table
(:mod:`~halfv.profile.report`). See ``docs/profile.md``.

Example::

    from halfv.profile import build_tiny, profile_images, suggested_config, write_outputs
    report = profile_images(build_tiny("llava"), ["cat.png"], "What animal is this?")
    write_outputs(report, "halfv-profile")
    config = suggested_config(report)       # a PruningConfig for halfv.apply
"""

from __future__ import annotations

from halfv.profile.collect import ProfileCurves, capture_slots, collect_curves, slot_entropies
from halfv.profile.inputs import Prompt, find_images, load_image, load_images
from halfv.profile.lifecycle import Lifecycle, detect_lifecycle
from halfv.profile.report import ModelInfo, ProfileReport, suggested_config
from halfv.profile.runner import build_report, profile_images, write_outputs
from halfv.profile.sources import (
    FAMILIES,
    ModelSource,
    TrainedUnavailableError,
    build_tiny,
    load_trained_source,
)

__all__ = [
    "FAMILIES",
    "Lifecycle",
    "ModelInfo",
    "ModelSource",
    "ProfileCurves",
    "ProfileReport",
    "Prompt",
    "TrainedUnavailableError",
    "build_report",
    "build_tiny",
    "capture_slots",
    "collect_curves",
    "detect_lifecycle",
    "find_images",
    "load_image",
    "load_images",
    "load_trained_source",
    "profile_images",
    "slot_entropies",
    "suggested_config",
    "write_outputs",
]
