"""``halfv demo``: one prompt with and without HalfV on a small model, offline, in seconds.

:func:`run_demo` loads the trained zoo LLaVA (``halfv_lab.zoo.load_trained("llava")``, real
SmolLM2-135M language model) when it can, else builds a tiny random LLaVA from a config,
and says which and why. The built-in input is in the zoo models' domain: a coloured shape
drawn like easy-VQA's images and an easy-VQA question (a photo, ``--image``, is outside
what a model trained on shapes can answer). The trained model is pruned with the schedule
calibrated for its checkpoint (:func:`halfv_lab.zoo.calibrated_schedule`), the tiny one with its
adapter's default, unless a schedule is given. On that image and question it measures:

* kept visual tokens per decoder layer (``handle.stats``);
* the prefill FLOPs ratio of that call, from the token counts each layer really processed
  (:func:`halfv.flops.flops_from_token_counts`, pruned vs unpruned counts);
* the measured prefill time ratio: median of 3 prefills with ``logits_to_keep=1`` each
  (after one warm-up), pruned vs unpruned;
* both greedy answers;
* the TME lifecycle of the unpruned model on the image (``profile.json`` and
  ``lifecycle.png`` in the output folder). The KL probe costs ``L`` forwards, so it runs
  by default on the tiny model only.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw
from torch import Tensor, nn

from halfv.config import PruningConfig
from halfv.flops import FlopsReport, flops_from_token_counts
from halfv.flops.model_specs import ModelDims
from halfv.pipeline import apply
from halfv.plugins import get_adapter_for, get_estimator
from halfv.profile.collect import collect_curves
from halfv.profile.inputs import Prompt, load_image
from halfv.profile.lifecycle import Lifecycle
from halfv.profile.runner import build_report, write_outputs
from halfv.profile.sources import (
    ModelSource,
    TrainedUnavailableError,
    build_tiny,
    load_trained_source,
)
from halfv.runtime.plan import PruneStats

__all__ = ["DEFAULT_QUESTION", "DemoResult", "prefill_seconds", "run_demo", "sample_image"]

DEFAULT_QUESTION = "What color is the shape?"


@dataclass(frozen=True)
class DemoResult:
    """What :func:`run_demo` measured.

    Attributes:
        model: one line about the model used.
        kind: ``"trained"`` or ``"tiny-random"``.
        fallback_reason: why the trained model was not used (``None`` if it was, or if
            the tiny one was asked for).
        image: where the image came from.
        question: the question asked.
        config: the schedule applied.
        schedule_source: where it came from (``--config``, the checkpoint's calibrated
            schedule, or the adapter's default).
        stats: token counts of the pruned prefill.
        flops: FLOPs of that prefill, pruned vs unpruned counts.
        prefill_full: median unpruned prefill seconds.
        prefill_pruned: median pruned prefill seconds.
        answer_full: greedy answer without HalfV.
        answer_pruned: greedy answer with HalfV.
        lifecycle: the stages found on the unpruned model.
        profile_json: the written profile report.
        plot: the written lifecycle plot.
        seconds: wall time of the whole demo.
    """

    model: str
    kind: str
    fallback_reason: str | None
    image: str
    question: str
    config: PruningConfig
    schedule_source: str
    stats: PruneStats
    flops: FlopsReport
    prefill_full: float
    prefill_pruned: float
    answer_full: str
    answer_pruned: str
    lifecycle: Lifecycle
    profile_json: Path
    plot: Path
    seconds: float

    @property
    def kept_visual(self) -> list[int]:
        """Visual tokens present at each decoder layer."""
        return self.stats.kept_visual_per_layer()

    @property
    def time_ratio(self) -> float:
        """Pruned / unpruned median prefill time."""
        return self.prefill_pruned / self.prefill_full


def sample_image() -> tuple[Image.Image, str]:
    """A red circle on white, 64 x 64, drawn like easy-VQA's images (the zoo's training data)."""
    image = Image.new("RGB", (64, 64), (255, 255, 255))
    ImageDraw.Draw(image).ellipse((14, 12, 50, 48), fill=(220, 30, 30))
    return image, "a red circle drawn like easy-VQA's images (64 x 64, upscaled by the processor)"


def _schedule(
    source: ModelSource, config: PruningConfig | None
) -> tuple[PruningConfig | None, str]:
    """The schedule to apply and where it came from (``None``: the adapter's default)."""
    if config is not None:
        return config, "given by the caller"
    if source.kind == "trained":
        from halfv_lab.zoo import calibrated_schedule

        calibrated = calibrated_schedule(source.family)
        if calibrated is not None:
            return calibrated, "calibrated for this checkpoint: halfv_lab.zoo.calibrated_schedule"
    return None, f"the {source.family} adapter's default"


def prefill_seconds(model: nn.Module, inputs: Mapping[str, Any], repeats: int = 3) -> float:
    """Median wall time of ``repeats`` prefills with ``logits_to_keep=1`` (after a warm-up)."""
    times = []
    with torch.no_grad():
        model(**inputs, logits_to_keep=1)
        for _ in range(repeats):
            start = time.perf_counter()
            model(**inputs, logits_to_keep=1)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def _answer(source: ModelSource, inputs: Mapping[str, Tensor], max_new_tokens: int) -> str:
    model: Any = source.model
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    prompt_len = int(inputs["input_ids"].shape[1])
    return source.builder.decode([int(i) for i in out[0, prompt_len:].tolist()])


def _load_source(tiny: bool) -> tuple[ModelSource, str | None]:
    if tiny:
        return build_tiny("llava"), None
    try:
        return load_trained_source("llava"), None
    except TrainedUnavailableError as exc:
        return build_tiny("llava"), str(exc)


def run_demo(
    *,
    out_dir: str | Path = "halfv-out",
    tiny: bool = False,
    kl: bool | None = None,
    image: str | Path | None = None,
    question: str = DEFAULT_QUESTION,
    max_new_tokens: int = 12,
    config: PruningConfig | None = None,
    progress: bool = False,
) -> DemoResult:
    """Run the demo (see the module docstring) and write the lifecycle files.

    Args:
        out_dir: folder for ``profile.json`` and ``lifecycle.png``.
        tiny: use the tiny random LLaVA even when the trained one is available.
        kl: run the KL probe in the profile; ``None`` = only on the tiny model.
        image: an image file instead of the built-in drawing.
        question: the question (plain text; may hold one ``<image>`` placeholder).
        max_new_tokens: length of each answer, ``>= 1``.
        config: the schedule; default: the checkpoint's calibrated schedule for the trained
            model, the adapter's default for the tiny one.
        progress: show a progress bar while profiling.

    Raises:
        ValueError, FileNotFoundError: a bad image, question, token count or output folder.
    """
    start = time.perf_counter()
    if max_new_tokens < 1:
        msg = f"--max-new-tokens {max_new_tokens} must be >= 1"
        raise ValueError(msg)
    prompt = Prompt.parse(question, option="--question")
    picture, image_note = (load_image(image), str(image)) if image else sample_image()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        msg = f"--out {str(out)!r} exists and is not a folder: pick a folder name"
        raise ValueError(msg)
    source, reason = _load_source(tiny)
    model = source.model
    inputs = source.builder(picture, prompt)
    config, schedule_source = _schedule(source, config)

    answer_full = _answer(source, inputs, max_new_tokens)
    time_full = prefill_seconds(model, inputs)
    with apply(model, config) as handle:
        answer_pruned = _answer(source, inputs, max_new_tokens)
        time_pruned = prefill_seconds(model, inputs)
        stats = handle.stats
        schedule = handle.config
    if stats is None:  # pragma: no cover - apply always prunes a prompt with an image
        msg = "the pruned prefill recorded no statistics: the prompt has no visual tokens"
        raise RuntimeError(msg)
    flops = flops_from_token_counts(
        ModelDims.from_config(model.config),
        [layer.query_rows[0] for layer in stats.layers],
        [layer.sequence[0] for layer in stats.layers],
    )

    with_kl = source.kind == "tiny-random" if kl is None else kl
    estimator = get_estimator(schedule.estimator, **schedule.estimator_options)
    curves = collect_curves(
        model, get_adapter_for(model), [inputs], estimator, with_kl=with_kl, progress=progress
    )
    report = build_report(
        source,
        curves,
        prompt=prompt.source,
        inputs=[image_note],
        estimator=schedule.estimator,
        estimator_options=schedule.estimator_options,
    )
    json_path, plot_path = write_outputs(report, out)
    return DemoResult(
        model=source.description,
        kind=source.kind,
        fallback_reason=reason,
        image=image_note,
        question=prompt.source,
        config=schedule,
        schedule_source=schedule_source,
        stats=stats,
        flops=flops,
        prefill_full=time_full,
        prefill_pruned=time_pruned,
        answer_full=answer_full,
        answer_pruned=answer_pruned,
        lifecycle=report.lifecycle,
        profile_json=json_path,
        plot=plot_path,
        seconds=time.perf_counter() - start,
    )
