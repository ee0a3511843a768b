"""One profile run: images + prompt -> curves -> lifecycle -> report -> files.

Used by ``halfv profile`` and ``halfv demo``; also the library entry point::

    from halfv.profile import build_tiny, profile_images, write_outputs
    report = profile_images(build_tiny("llava"), ["cat.png"], "What is this?")
    write_outputs(report, "halfv-profile")    # profile.json + lifecycle.png
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from halfv.errors import HalfvValueError
from halfv.plugins import get_adapter_for, get_estimator, halfv_version
from halfv.profile.collect import ProfileCurves, collect_curves
from halfv.profile.inputs import Prompt, load_images
from halfv.profile.lifecycle import (
    DEFAULT_DROP,
    DEFAULT_MIN_DEPTH,
    DEFAULT_TIE,
    detect_lifecycle,
)
from halfv.profile.report import ModelInfo, ProfileReport, atomic_path
from halfv.profile.sources import ModelSource
from halfv.runtime.layer_kinds import valid_scored_layers

__all__ = ["JSON_NAME", "PLOT_NAME", "build_report", "profile_images", "write_outputs"]

JSON_NAME = "profile.json"
PLOT_NAME = "lifecycle.png"


def build_report(
    source: ModelSource,
    curves: ProfileCurves,
    *,
    prompt: str,
    inputs: Sequence[str],
    estimator: str,
    estimator_options: Mapping[str, Any] | None = None,
    drop: float = DEFAULT_DROP,
    tie: float = DEFAULT_TIE,
    min_depth: float = DEFAULT_MIN_DEPTH,
) -> ProfileReport:
    """Detect the lifecycle on ``curves`` and bundle everything into a report."""
    model: Any = source.model
    adapter = get_adapter_for(model)
    text_config = model.config.get_text_config()
    specs = adapter.layer_specs(model)
    scored = valid_scored_layers(specs) if any(s.kind == "linear" for s in specs) else None
    info = ModelInfo(
        family=source.family,
        source=source.kind,
        description=source.description,
        model_type=str(model.config.model_type),
        num_layers=curves.num_layers,
        hidden_size=int(text_config.hidden_size),
        scored_layers=scored,
    )

    def nullable(values: Sequence[float]) -> list[float | None]:
        return [None if math.isnan(v) else float(v) for v in values]

    return ProfileReport(
        halfv_version=halfv_version(),
        model=info,
        estimator=estimator,
        estimator_options=dict(estimator_options or {}),
        prompt=prompt,
        inputs=list(inputs),
        visual_tokens=curves.visual_tokens,
        text_tokens=curves.text_tokens,
        whole=nullable(curves.whole),
        visual=nullable(curves.visual),
        text=nullable(curves.text),
        kl=curves.kl,
        lifecycle=detect_lifecycle(
            curves.whole,
            curves.kl,
            drop=drop,
            tie=tie,
            min_depth=min_depth,
            scored_layers=scored,
        ),
        default_config=adapter.default_config(model),
    )


def profile_images(
    source: ModelSource,
    images: Sequence[str | Path],
    prompt: str | Prompt,
    *,
    estimator: str = "tme",
    estimator_options: Mapping[str, Any] | None = None,
    with_kl: bool = True,
    drop: float = DEFAULT_DROP,
    tie: float = DEFAULT_TIE,
    min_depth: float = DEFAULT_MIN_DEPTH,
    console: Console | None = None,
    progress: bool = True,
) -> ProfileReport:
    """Profile ``source.model`` on image files with one prompt.

    Args:
        source: the model and its input builder (:func:`~halfv.profile.sources.build_tiny`
            or :func:`~halfv.profile.sources.load_trained_source`).
        images: image files, each profiled as one input.
        prompt: a :class:`~halfv.profile.inputs.Prompt` or plain question text.
        estimator: registered entropy estimator name.
        estimator_options: its options (validated by the estimator).
        with_kl: also run the KL layer-redundancy probe (``L`` forwards per input).
        drop: knee threshold of the lifecycle rule.
        tie: minimum tie tolerance of the lifecycle rule.
        min_depth: smallest descent that counts as a lifecycle (fraction of the range).
        console: where the progress bar goes.
        progress: show the progress bar.

    Raises:
        ValueError, FileNotFoundError: a bad image, prompt or estimator option.
    """
    parsed = prompt if isinstance(prompt, Prompt) else Prompt.parse(prompt)
    options = dict(estimator_options or {})
    est = get_estimator(estimator, **options)
    paths = [Path(p) for p in images]
    batches = [source.builder(image, parsed) for image in load_images(paths)]
    curves = collect_curves(
        source.model,
        get_adapter_for(source.model),
        batches,
        est,
        with_kl=with_kl,
        console=console,
        progress=progress,
    )
    return build_report(
        source,
        curves,
        prompt=parsed.source,
        inputs=[str(p) for p in paths],
        estimator=estimator,
        estimator_options=options,
        drop=drop,
        tie=tie,
        min_depth=min_depth,
    )


def write_outputs(report: ProfileReport, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``profile.json`` and ``lifecycle.png`` into ``out_dir``, all or nothing.

    Both files are written to temporary names first and renamed only when both are
    complete. A folder created here is removed again if writing fails.

    Returns:
        The paths of the JSON report and the plot.

    Raises:
        ValueError: ``out_dir`` exists and is not a folder.
    """
    folder = Path(out_dir)
    if folder.exists() and not folder.is_dir():
        msg = f"--out {str(folder)!r} exists and is not a folder: pick a folder name"
        raise HalfvValueError(msg)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    json_path, plot_path = folder / JSON_NAME, folder / PLOT_NAME
    try:
        with atomic_path(json_path) as tmp_json, atomic_path(plot_path) as tmp_plot:
            tmp_json.write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
            report.plot(tmp_plot)
    except BaseException:
        if created and not any(folder.iterdir()):
            folder.rmdir()
        raise
    return json_path, plot_path
