"""Benchmarks of halfv, and the schedules they compare.

This module holds what the runner and its reports share: the method names, the matched
budgets, the schedule each method runs at a budget, FLOPs matching, and the results file
(:class:`ResultsStore`). The accuracy-retention benchmark is :mod:`halfv_lab.bench.accuracy`
(``halfv bench-accuracy``); tables, plot and CI check are in :mod:`halfv_lab.bench.report`.

``results.json`` is rewritten (atomically) after every evaluation, so an interrupted run
keeps what it measured and ``--resume`` continues from it::

    {"schema": "halfv-bench-accuracy/1",
     "meta": {"command": ..., "device_name": ..., "versions": {...}, "settings": {...}},
     "entries": [{"family", "dataset", "method", "view", "budget", "keep", "config", "n",
                  "accuracy", "correct", "retention", "agreement", "flops_ratio",
                  "speedup", "target_flops_ratio", "flops_matched",
                  "measured_flops_ratio", ...}, ...]}

Definitions (see ``docs/benchmarks.md``):

* **budget** ``b`` -- the fraction of each image's visual tokens kept at the IVR layer;
  ``default`` is the family's own default ``ivr_keep``. HalfV at budget ``b`` is its
  default schedule with ``ivr_keep = b`` and, for ``ssr_mode='prune'``, ``ssr_keep``
  scaled by the same factor (0.25 -> 0.05 becomes ``b -> b/5``); ``freeze`` is unchanged.
  A baseline at budget ``b`` prunes once, at the family's HalfV IVR layer, keeping ``b``.
* **FLOPs ratio** -- pruned / unpruned language-model prefill FLOPs, the ``exact``
  variant of :func:`halfv.flops.estimate` (GQA, SwiGLU, causal attention and the
  relevance / selection overhead of each policy) for one image and the dataset's mean
  text length.
* **matched FLOPs** -- a baseline's keep solved by bisection so that its FLOPs ratio
  equals HalfV's at the same budget (within one kept token).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from halfv.config import PruningConfig
from halfv.flops import estimate
from halfv.flops.model_specs import ModelDims
from halfv.ops.budget import kept_count

if TYPE_CHECKING:
    from halfv_lab.bench.accuracy import RunSpec

__all__ = [
    "BASELINES",
    "DEFAULT_BUDGETS",
    "FLOPS_VARIANT",
    "METHODS",
    "SCHEMA",
    "UNPRUNED",
    "VIEWS",
    "Budget",
    "KeepMatch",
    "ResultsStore",
    "baseline_config",
    "flops_ratio",
    "halfv_at_budget",
    "items_digest",
    "load_results",
    "make_entry",
    "match_flops",
    "parse_budgets",
    "write_text_atomic",
]

METHODS: tuple[str, ...] = (
    "halfv",
    "halfv-calibrated",
    "attention",
    "diversity",
    "random",
    "uniform",
)
"""Method names: HalfV (default / calibrated schedule) and the four IVR baselines."""
BASELINES: tuple[str, ...] = ("attention", "diversity", "random", "uniform")
"""Single-prune baselines; each is the IVR policy of the same name with no SSR stage."""
VIEWS: tuple[str, ...] = ("budget", "flops")
"""Comparison views: matched budget and matched FLOPs."""
DEFAULT_BUDGETS = "default,0.5,0.25,0.11,0.05"
"""Budgets of the full run (``default`` = each family's default IVR keep)."""
UNPRUNED = "unpruned"
"""Method name of the reference run."""
SCHEMA = "halfv-bench-accuracy/1"
"""Schema tag of ``results.json``."""
FLOPS_VARIANT = "exact"
"""FLOPs variant used for ratios and matching (see :mod:`halfv.flops`)."""


@dataclass(frozen=True)
class Budget:
    """A matched budget: the fraction of visual tokens kept at the IVR layer.

    Attributes:
        label: ``"default"`` or the ratio as written (``"0.25"``).
        keep: the ratio, or ``None`` for the family's default ``ivr_keep``.
    """

    label: str
    keep: float | None = None

    def resolve(self, default_keep: float) -> float:
        """The keep ratio for a family whose default schedule keeps ``default_keep``."""
        return default_keep if self.keep is None else self.keep


def parse_budgets(text: str) -> list[Budget]:
    """Parse ``"default,0.5,0.25"`` into budgets (duplicates dropped, order kept).

    Raises:
        ValueError: an entry is neither ``default`` nor a ratio in ``(0, 1]``.
    """
    out: list[Budget] = []
    for raw in (part.strip() for part in text.split(",")):
        if raw == "default":
            budget = Budget("default")
        else:
            try:
                keep = float(raw)
            except ValueError:
                keep = -1.0
            if not 0.0 < keep <= 1.0:
                msg = f"budget {raw!r} is not 'default' or a keep ratio in (0, 1], e.g. 0.25"
                raise ValueError(msg)
            budget = Budget(f"{keep:g}", keep)
        if budget not in out:
            out.append(budget)
    if not out:
        msg = "no budgets given: pass e.g. --budgets default,0.5,0.25,0.11,0.05"
        raise ValueError(msg)
    return out


def halfv_at_budget(base: PruningConfig, keep: float) -> PruningConfig:
    """``base`` with ``ivr_keep = keep``; a ``prune`` SSR keep scales by the same factor."""
    if keep == base.ivr_keep:
        return base
    update: dict[str, Any] = {"ivr_keep": keep}
    if base.ssr_mode == "prune":
        update["ssr_keep"] = min(keep, base.ssr_keep * keep / base.ivr_keep)
    return PruningConfig.model_validate({**base.model_dump(), **update})


def baseline_config(policy: str, layer: int, keep: float, seed: int = 0) -> PruningConfig:
    """One prune at ``layer`` keeping ``keep`` with IVR policy ``policy``; no SSR stage."""
    options: dict[str, Any] = {"seed": seed} if policy == "random" else {}
    return PruningConfig(
        ivr_layer=layer, ivr_keep=keep, ivr_policy=policy, ivr_policy_options=options
    )


def flops_ratio(dims: ModelDims, config: PruningConfig, visual: int, text: int) -> float:
    """Pruned / unpruned prefill FLOPs (exact variant) of one image prompt."""
    report = estimate(dims, config, visual, text)
    return report.pruned_exact / report.full_exact


@dataclass(frozen=True)
class KeepMatch:
    """Result of :func:`match_flops`.

    Attributes:
        keep: the solved keep ratio (``count / visual``).
        count: visual tokens kept.
        ratio: FLOPs ratio at ``keep``.
        target: the FLOPs ratio asked for.
        matched: the target lies within the achievable range, so ``ratio`` is within one
            kept token of it; ``False`` means ``keep`` is clamped to 1 token or all tokens.
    """

    keep: float
    count: int
    ratio: float
    target: float
    matched: bool


def match_flops(
    dims: ModelDims,
    make: Callable[[float], PruningConfig],
    target: float,
    visual: int,
    text: int,
) -> KeepMatch:
    """Solve for the keep whose FLOPs ratio is closest to ``target`` by bisection.

    ``make(keep)`` builds the schedule; the search runs over the kept count ``1..visual``
    (every keep maps to one count, see :func:`halfv.ops.budget.kept_count`) on which the ratio
    is non-decreasing, and returns the closer end of the final bracket.
    """

    def ratio_of(count: int) -> float:
        return flops_ratio(dims, make(count / visual), visual, text)

    lo, hi = 1, max(1, visual - 1)  # keeping every token is not a prune
    r_lo, r_hi = ratio_of(lo), ratio_of(hi)
    if target <= r_lo or target >= r_hi:
        count, ratio = (lo, r_lo) if target <= r_lo else (hi, r_hi)
        return KeepMatch(count / visual, count, ratio, target, abs(ratio - target) < 1e-12)
    while hi - lo > 1:  # invariant: ratio(lo) < target < ratio(hi)
        mid = (lo + hi) // 2
        r_mid = ratio_of(mid)
        if r_mid == target:
            lo = hi = mid
            r_lo = r_hi = r_mid
        elif r_mid < target:
            lo, r_lo = mid, r_mid
        else:
            hi, r_hi = mid, r_mid
    count, ratio = (lo, r_lo) if target - r_lo <= r_hi - target else (hi, r_hi)
    assert kept_count(visual, count / visual) == count
    return KeepMatch(count / visual, count, ratio, target, True)


def items_digest(items: Sequence[Any]) -> str:
    """Short hash of the questions and answers, so cached results match their items."""
    h = hashlib.sha256()
    for item in items:
        h.update(f"{getattr(item, 'question', '')}\t{getattr(item, 'answer', '')}\n".encode())
    return h.hexdigest()[:16]


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file renamed into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def make_entry(
    family: str,
    dataset: str,
    spec: RunSpec,
    result: Mapping[str, Any],
    reference: Mapping[str, Any],
    *,
    counts: tuple[int, int, int, str],
    max_new_tokens: int,
) -> dict[str, Any]:
    """One ``results.json`` entry for ``spec`` on ``dataset``.

    Args:
        family: backbone name.
        dataset: dataset name.
        spec: the evaluated schedule.
        result: its ``accuracy``, ``correct``, ``seconds``, ``measured_flops_ratio`` and
            ``predictions`` (or, when reused from a file, ``agreement``); optionally
            ``hits``, one ``"1"``/``"0"`` per question (right or wrong), which the CI
            gate's paired test reads.
        reference: the unpruned result on the same items.
        counts: ``(questions, visual tokens per image, mean text tokens, items digest)``.
        max_new_tokens: the greedy decoding length.
    """
    n, visual, text, digest = counts
    preds, ref_preds = result.get("predictions"), reference.get("predictions")
    agreement = result.get("agreement")
    if preds is not None and ref_preds is not None and len(ref_preds) == len(preds):
        agreement = sum(a == b for a, b in zip(preds, ref_preds, strict=True)) / max(1, n)
    ref_acc, acc, cfg = float(reference["accuracy"]), float(result["accuracy"]), spec.config
    entry: dict[str, Any] = {
        "family": family,
        "dataset": dataset,
        "method": spec.method,
        "view": spec.view,
        "budget": spec.budget,
        "keep": 1.0 if cfg is None else cfg.ivr_keep,
        "config": None if cfg is None else cfg.model_dump(mode="json"),
        "n": n,
        "accuracy": acc,
        "correct": float(result["correct"]),
        "retention": acc / ref_acc if ref_acc > 0 else None,
        "agreement": agreement,
        "flops_ratio": spec.flops_ratio,
        "speedup": 1.0 / spec.flops_ratio,
        "target_flops_ratio": spec.target_flops_ratio,
        "flops_matched": spec.flops_matched,
        "measured_flops_ratio": result.get("measured_flops_ratio"),
        "visual_tokens": visual,
        "text_tokens": text,
        "seconds": float(result["seconds"]),
        "items_digest": digest,
        "max_new_tokens": max_new_tokens,
        "key": spec.key,
    }
    if result.get("hits") is not None:
        entry["hits"] = str(result["hits"])
    if cfg is None:
        entry["predictions"] = preds
    return entry


_IDENTITY = ("family", "dataset", "method", "view", "budget")


@dataclass
class ResultsStore:
    """Entries of one run, written to ``path`` (if any) after every change.

    Attributes:
        path: the ``results.json`` file, or ``None`` to keep results in memory.
        meta: run metadata (command, device, versions, settings).
        entries: entries of this run.
        previous: entries of an earlier run that :meth:`lookup` may reuse (``--resume``).
    """

    path: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    entries: list[dict[str, Any]] = field(default_factory=list)
    previous: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def open(cls, path: str | Path, meta: Mapping[str, Any], resume: bool = False) -> ResultsStore:
        """A store writing ``path``; with ``resume``, entries already there can be reused."""
        path = Path(path)
        previous: list[dict[str, Any]] = []
        if resume and path.is_file():
            data = load_results(path)
            _check_resumable(data.get("meta", {}), meta, path)
            previous = list(data["entries"])
        return cls(path, dict(meta), [], previous)

    def lookup(
        self, family: str, dataset: str, key: str, digest: str, max_new_tokens: int
    ) -> dict[str, Any] | None:
        """A finished result of the same schedule on the same items, or ``None``."""
        for entry in (*self.entries, *self.previous):
            same = (entry["family"], entry["dataset"], entry["key"], entry["items_digest"])
            if same == (family, dataset, key, digest) and entry["max_new_tokens"] == max_new_tokens:
                return dict(entry)
        return None

    def add(self, entry: Mapping[str, Any]) -> None:
        """Add ``entry`` (replacing one with the same identity) and write the file."""
        ident = tuple(entry[k] for k in _IDENTITY)
        self.entries = [e for e in self.entries if tuple(e[k] for k in _IDENTITY) != ident]
        self.entries.append(dict(entry))
        self.write()

    def to_dict(self) -> dict[str, Any]:
        """The ``results.json`` content: this run's entries, then earlier ones not redone."""
        done = {tuple(e[k] for k in _IDENTITY) for e in self.entries}
        kept = [e for e in self.previous if tuple(e[k] for k in _IDENTITY) not in done]
        return {"schema": SCHEMA, "meta": self.meta, "entries": [*self.entries, *kept]}

    def close(self) -> None:
        """End of a finished run: drop earlier entries it did not redo, and write.

        Until then the file keeps them, so a resumed run that is interrupted again loses
        nothing it had not yet reached.
        """
        self.previous = []
        self.write()

    def write(self) -> None:
        """Write ``results.json`` atomically (no-op without a path)."""
        if self.path is not None:
            write_text_atomic(self.path, json.dumps(self.to_dict(), indent=1) + "\n")


_RESUME_SETTINGS = ("dtype", "checkpoint", "seed")
"""Settings that change answers without changing an entry's key: ``--resume`` needs them equal."""


def _check_resumable(stored: Mapping[str, Any], meta: Mapping[str, Any], path: Path) -> None:
    old, new = stored.get("settings", {}), meta.get("settings", {})
    for name in _RESUME_SETTINGS:
        if name in old and name in new and old[name] != new[name]:
            option = "--" + name.replace("_", "-")
            msg = (
                f"--resume: {path} was written with {option} {old[name]}, this run has "
                f"{option} {new[name]}; use another --out, or drop --resume to start over"
            )
            raise ValueError(msg)


def load_results(path: str | Path) -> dict[str, Any]:
    """Read a ``results.json``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a results file of this schema.
    """
    path = Path(path)
    if not path.is_file():
        msg = f"results file {str(path)!r} does not exist: run `halfv bench-accuracy` first"
        raise FileNotFoundError(msg)
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        msg = f"{path} is not a halfv accuracy-benchmark results file (schema {SCHEMA!r})"
        raise ValueError(msg)
    return data
