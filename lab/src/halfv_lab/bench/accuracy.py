"""The accuracy-retention benchmark: unpruned vs pruned answers of the zoo VLMs.

For every backbone (zoo family) and dataset the unpruned model answers the questions once
(greedy); then every method answers them again under its schedule at every budget, in two
views (definitions in :mod:`halfv_lab.bench` and ``docs/benchmarks.md``):

* ``budget`` -- every method keeps the same fraction ``b`` at the same layer (HalfV also
  runs its SSR stage, so its FLOPs are lower);
* ``flops`` -- each baseline's keep is solved so its FLOPs ratio equals HalfV's at ``b``.

Each run is recorded as accuracy, **retention** (pruned accuracy / unpruned accuracy on the
same questions), agreement with the unpruned answers, and FLOPs ratio. Models and items
are injected (:func:`run_accuracy_benchmark`), so tests can pass tiny random models and
fake items; ``halfv bench-accuracy`` passes the trained zoo models and the test splits.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from halfv.config import PruningConfig
from halfv.flops.model_specs import ModelDims
from halfv_lab.bench import (
    BASELINES,
    DEFAULT_BUDGETS,
    METHODS,
    UNPRUNED,
    VIEWS,
    Budget,
    baseline_config,
    flops_ratio,
    halfv_at_budget,
    items_digest,
    match_flops,
    parse_budgets,
)
from halfv_lab.bench.reuse import reuse_image_features

if TYPE_CHECKING:
    from rich.console import Console

    from halfv_lab.bench import ResultsStore

__all__ = [
    "AnswerFn",
    "BenchModel",
    "BenchSettings",
    "RunSpec",
    "ScoreFn",
    "plan_runs",
    "run_accuracy_benchmark",
]

AnswerFn = Callable[..., list[str]]
"""``answer(model, processor, items, *, batch_size, max_new_tokens, device) -> predictions``."""
ScoreFn = Callable[[Sequence[str], Sequence[Any]], float]
"""``score(predictions, items) -> accuracy in [0, 1]``."""


@dataclass
class BenchModel:
    """One backbone to benchmark.

    Attributes:
        model: the VLM (already on its device, eval mode).
        processor: the processor-like object the answer function takes. For FLOPs it must
            expose ``num_visual_tokens`` and ``prompt_ids(question)`` unless
            :attr:`visual_tokens` / :attr:`text_tokens` are given.
        halfv_config: HalfV's schedule; ``None`` means the adapter's default for the model.
        calibrated: a schedule from ``halfv calibrate`` (method ``halfv-calibrated``).
        visual_tokens: visual tokens per image (overrides the processor).
        text_tokens: non-visual prompt tokens (overrides the per-dataset mean).
    """

    model: Any
    processor: Any
    halfv_config: PruningConfig | None = None
    calibrated: PruningConfig | None = None
    visual_tokens: int | None = None
    text_tokens: int | None = None

    def default_schedule(self) -> PruningConfig:
        """:attr:`halfv_config`, else the backbone adapter's default for this depth."""
        if self.halfv_config is None:
            from halfv.plugins import get_adapter_for

            self.halfv_config = get_adapter_for(self.model).default_config(self.model)
        return self.halfv_config

    def dims(self) -> ModelDims:
        """Language-model dimensions of :attr:`model`."""
        return ModelDims.from_config(self.model.config)

    def token_counts(self, items: Sequence[Any]) -> tuple[int, int]:
        """``(visual tokens per image, mean non-visual prompt tokens)`` for ``items``."""
        visual = self.visual_tokens or getattr(self.processor, "num_visual_tokens", None)
        prompt_ids: Callable[[str], Sequence[int]] | None
        prompt_ids = getattr(self.processor, "prompt_ids", None)
        if not isinstance(visual, int) or (self.text_tokens is None and prompt_ids is None):
            msg = (
                f"cannot count prompt tokens with {type(self.processor).__name__}: it needs "
                "num_visual_tokens and prompt_ids(question), or set BenchModel.visual_tokens "
                "and BenchModel.text_tokens"
            )
            raise TypeError(msg)
        if self.text_tokens is not None or prompt_ids is None:
            return visual, int(self.text_tokens or 0)
        lengths = [len(prompt_ids(str(item.question))) - visual for item in items]
        return visual, max(1, round(sum(lengths) / max(1, len(lengths))))


@dataclass
class BenchSettings:
    """What to run.

    Attributes:
        methods: names from :data:`METHODS`.
        budgets: matched budgets.
        views: names from :data:`VIEWS`.
        batch_size: questions per generate call.
        max_new_tokens: greedy decoding length.
        device: where the model runs (passed to the answer function).
        baseline_layer: prune layer of the baselines (default: the family's IVR layer).
        seed: seed of the ``random`` baseline.
        reuse_vision: compute each batch's image features once per backbone and dataset
            and reuse them in every run (:mod:`halfv_lab.bench.reuse`; exact, answers do not
            change); ``None``: only when ``device`` is the CPU.
    """

    methods: Sequence[str] = METHODS
    budgets: Sequence[Budget] = field(default_factory=lambda: parse_budgets(DEFAULT_BUDGETS))
    views: Sequence[str] = VIEWS
    batch_size: int = 16
    max_new_tokens: int = 4
    device: str = "cpu"
    baseline_layer: int | None = None
    seed: int = 0
    reuse_vision: bool | None = None

    def __post_init__(self) -> None:
        for kind, names, known in (("method", self.methods, METHODS), ("view", self.views, VIEWS)):
            bad = [n for n in names if n not in known]
            if bad:
                msg = f"unknown {kind} {bad[0]!r}: choose from {', '.join(known)}"
                raise ValueError(msg)
        if self.batch_size < 1 or self.max_new_tokens < 1:
            msg = "batch_size and max_new_tokens must be >= 1"
            raise ValueError(msg)


@dataclass(frozen=True)
class RunSpec:
    """One evaluation to run: a method at a budget in a view, with its schedule.

    Attributes:
        method: a name from :data:`METHODS` or :data:`UNPRUNED`.
        view: ``"budget"``, ``"flops"`` or ``"none"`` (unpruned).
        budget: the budget label (``""`` for unpruned).
        config: the schedule (``None`` for unpruned).
        flops_ratio: estimated pruned / unpruned prefill FLOPs.
        target_flops_ratio: in the ``flops`` view, HalfV's ratio that was matched.
        flops_matched: in the ``flops`` view, whether the target was reachable.
    """

    method: str
    view: str
    budget: str
    config: PruningConfig | None
    flops_ratio: float = 1.0
    target_flops_ratio: float | None = None
    flops_matched: bool | None = None

    @property
    def key(self) -> str:
        """Identity of the schedule: runs with equal keys give equal predictions."""
        # min_gain (the per-call cost gate) is left out: accuracy runs always prune, and
        # results stored before the field existed keep their keys
        return (
            UNPRUNED if self.config is None else self.config.model_dump_json(exclude={"min_gain"})
        )


def plan_runs(bench: BenchModel, settings: BenchSettings, visual: int, text: int) -> list[RunSpec]:
    """Every evaluation of one family on one dataset, unpruned first.

    Raises:
        ValueError: a calibrated schedule with ``ssr_mode='auto'`` (resolve it first).
    """
    dims, base = bench.dims(), bench.default_schedule()
    layer = settings.baseline_layer or base.ivr_layer
    specs = [RunSpec(UNPRUNED, "none", "", None)]
    calibrated = bench.calibrated if "halfv-calibrated" in settings.methods else None
    if calibrated is not None and calibrated.ssr_mode == "auto":
        msg = "the calibrated schedule has ssr_mode='auto': set it to 'prune' or 'freeze'"
        raise ValueError(msg)
    for budget in settings.budgets:
        keep = budget.resolve(base.ivr_keep)
        halfv = halfv_at_budget(base, keep)
        target = flops_ratio(dims, halfv, visual, text)
        if "halfv" in settings.methods:
            specs.append(RunSpec("halfv", "budget", budget.label, halfv, target))
        if calibrated is not None:
            cal = halfv_at_budget(calibrated, budget.resolve(calibrated.ivr_keep))
            ratio = flops_ratio(dims, cal, visual, text)
            specs.append(RunSpec("halfv-calibrated", "budget", budget.label, cal, ratio))
        for policy in (m for m in BASELINES if m in settings.methods):

            def make(k: float, policy: str = policy) -> PruningConfig:
                return baseline_config(policy, layer, k, settings.seed)

            if "budget" in settings.views:
                cfg = make(keep)
                ratio = flops_ratio(dims, cfg, visual, text)
                specs.append(RunSpec(policy, "budget", budget.label, cfg, ratio))
            if "flops" in settings.views:
                match = match_flops(dims, make, target, visual, text)
                specs.append(
                    RunSpec(
                        policy,
                        "flops",
                        budget.label,
                        make(match.keep),
                        match.ratio,
                        target,
                        match.matched,
                    )
                )
    return specs


def _zoo_functions() -> tuple[AnswerFn, ScoreFn]:
    try:
        from halfv_lab.zoo.evaluate import accuracy, answer_questions
    except ImportError as exc:
        msg = (
            f"halfv_lab.zoo.evaluate is not available ({exc}): it provides answer_questions() and "
            "accuracy(); or pass answer= and score= to run_accuracy_benchmark"
        )
        raise ImportError(msg) from exc
    return answer_questions, accuracy


def _evaluate(
    spec: RunSpec,
    bench: BenchModel,
    items: Sequence[Any],
    settings: BenchSettings,
    *,
    answer: AnswerFn,
    score: ScoreFn,
) -> dict[str, Any]:
    """Answer ``items`` under ``spec``: predictions, accuracy, seconds, measured FLOPs."""
    started = time.perf_counter()
    kwargs = {
        "batch_size": settings.batch_size,
        "max_new_tokens": settings.max_new_tokens,
        "device": settings.device,
    }
    measured: float | None = None
    if spec.config is None:
        preds = list(answer(bench.model, bench.processor, items, **kwargs))
    else:
        import halfv
        from halfv.errors import HalfvError

        # the method as configured on every call: the cost gate never skips a stage here
        ungated = spec.config.model_copy(update={"min_gain": None})
        with halfv.apply(bench.model, ungated) as handle:
            preds = list(answer(bench.model, bench.processor, items, **kwargs))
            try:  # the last prefill's first sample, as the runtime counted it
                report = handle.flops(0)
                measured = report.pruned_exact / report.full_exact
            except HalfvError:
                measured = None
    if len(preds) != len(items):
        msg = f"the answer function returned {len(preds)} predictions for {len(items)} items"
        raise RuntimeError(msg)
    accuracy = float(score(preds, items))
    hits = "".join(
        "1" if score([p], [item]) > 0 else "0" for p, item in zip(preds, items, strict=True)
    )
    return {
        "predictions": [str(p) for p in preds],
        "hits": hits,
        "accuracy": accuracy,
        "correct": accuracy * len(items),
        "measured_flops_ratio": measured,
        "seconds": time.perf_counter() - started,
    }


def _specs_per_dataset(settings: BenchSettings) -> int:
    per_budget = int("halfv" in settings.methods)
    per_budget += sum(m in settings.methods for m in BASELINES) * len(settings.views)
    return 1 + per_budget * len(settings.budgets)


def run_accuracy_benchmark(
    models: Mapping[str, BenchModel | Callable[[], BenchModel]],
    datasets: Mapping[str, Sequence[Any]],
    settings: BenchSettings,
    *,
    answer: AnswerFn | None = None,
    score: ScoreFn | None = None,
    store: ResultsStore | None = None,
    progress: bool = True,
    console: Console | None = None,
) -> ResultsStore:
    """Run every planned evaluation of every family on every dataset.

    Args:
        models: family name -> :class:`BenchModel`, or a zero-argument factory called when
            the family's turn comes (and released afterwards).
        datasets: dataset name -> items with ``question`` and ``answer`` (``VQAItem``).
        settings: methods, budgets, views and generation settings.
        answer: ``answer(model, processor, items, *, batch_size, max_new_tokens, device)``;
            default :func:`halfv_lab.zoo.evaluate.answer_questions` (greedy).
        score: ``score(predictions, items) -> accuracy``; default
            :func:`halfv_lab.zoo.evaluate.accuracy`.
        store: where entries go (written after every evaluation); reused entries of a
            resumed store are not recomputed, and :meth:`ResultsStore.close` is called at
            the end. Default: an in-memory store.
        progress: show a rich progress bar (questions answered).
        console: the rich console of the progress bar.

    Returns:
        The store, holding one entry per (family, dataset, method, view, budget).
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from halfv_lab.bench import ResultsStore, make_entry

    if answer is None or score is None:
        zoo_answer, zoo_score = _zoo_functions()
        answer, score = answer or zoo_answer, score or zoo_score
    store = store if store is not None else ResultsStore(None)
    per_dataset = _specs_per_dataset(settings)
    total = sum(len(items) for items in datasets.values()) * per_dataset * len(models)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, disable=not progress) as bar:
        task = bar.add_task("accuracy", total=total)
        for family, source in models.items():
            bench = source() if callable(source) else source
            for dataset, items in datasets.items():
                visual, text = bench.token_counts(items)
                counts = (len(items), visual, text, items_digest(items))
                specs = plan_runs(bench, settings, visual, text)
                total += (len(specs) - per_dataset) * len(items)
                bar.update(task, total=total)
                done: dict[str, Mapping[str, Any]] = {}
                reference: Mapping[str, Any] = {}
                reuse = settings.reuse_vision
                reuse = str(settings.device).startswith("cpu") if reuse is None else reuse
                with reuse_image_features(bench.model, enabled=reuse):
                    for spec in specs:
                        label = (
                            f"{family}/{dataset} {spec.method} {spec.view} {spec.budget}".strip()
                        )
                        bar.update(task, description=label)
                        result = done.get(spec.key) or store.lookup(
                            family, dataset, spec.key, counts[3], settings.max_new_tokens
                        )
                        if result is None:
                            result = _evaluate(
                                spec, bench, items, settings, answer=answer, score=score
                            )
                        done[spec.key] = result
                        reference = result if spec.config is None else reference
                        entry = make_entry(
                            family,
                            dataset,
                            spec,
                            result,
                            reference,
                            counts=counts,
                            max_new_tokens=settings.max_new_tokens,
                        )
                        store.add(entry)
                        bar.advance(task, len(items))
            if callable(source):
                del bench
                _release_memory()
    store.close()
    return store


def _release_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
