"""The CI gate of the accuracy benchmark (``halfv bench-accuracy --check``).

HalfV's default schedule must keep a minimum retention on every backbone and must not
fall below random pruning at the same budget. With a handful of questions per backbone
"below" is judged by a paired test on the same questions (:func:`paired_sign_test`), so
the gate does not flip on a lucky random draw; ``docs/benchmarks.md`` ("The CI gate")
explains the settings CI uses.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from halfv_lab.bench.report import POOLED, _find, pooled_entries

__all__ = ["CheckOutcome", "check_results", "paired_sign_test"]


@dataclass(frozen=True)
class CheckOutcome:
    """Result of :func:`check_results`: ``ok`` and one line per comparison made."""

    ok: bool
    lines: list[str]


def paired_sign_test(ours: str, theirs: str) -> tuple[int, int, float]:
    """One-sided exact sign test on paired right/wrong answers to the same questions.

    Args:
        ours, theirs: one ``"1"`` (right) or ``"0"`` (wrong) per question, same order.

    Returns:
        ``(ours_only, theirs_only, p)``: the questions only we / only they answer right,
        and the probability of ``theirs_only`` or more of the ``ours_only + theirs_only``
        discordant questions going their way if both were equally good (McNemar's exact
        test, one-sided). A small ``p`` means they are really ahead.
    """
    if len(ours) != len(theirs):
        msg = f"paired answers differ in length: {len(ours)} and {len(theirs)} questions"
        raise ValueError(msg)
    ours_only = sum(a == "1" and b == "0" for a, b in zip(ours, theirs, strict=True))
    theirs_only = sum(a == "0" and b == "1" for a, b in zip(ours, theirs, strict=True))
    total = ours_only + theirs_only
    tail = sum(math.comb(total, k) for k in range(theirs_only, total + 1))
    return ours_only, theirs_only, tail / 2**total


def _pooled_hits(entries: Iterable[Mapping[str, Any]], **match: str) -> str | None:
    """The per-question hits of one (family, method, view, budget), datasets in name order."""
    per_dataset = [e for e in entries if e["dataset"] != POOLED]
    found = sorted(_find(per_dataset, **match), key=lambda e: str(e["dataset"]))
    if not found or any(e.get("hits") is None for e in found):
        return None
    return "".join(str(e["hits"]) for e in found)


def check_results(
    results: Mapping[str, Any],
    min_retention: float = 0.95,
    margin: float = 0.0,
    *,
    method: str = "halfv",
    alpha: float | None = None,
) -> CheckOutcome:
    """The CI gate: HalfV's default schedule per backbone, on all datasets pooled.

    Fails when its retention is below ``min_retention``, or it falls below the ``random``
    baseline at the same budget (every view present), or when a needed row is missing.
    "Below random" means: with ``alpha`` (the CI's setting), random is ahead on the same
    questions by a one-sided exact sign test with ``p < alpha``
    (:func:`paired_sign_test`; needs per-question ``hits`` in the entries); without it,
    random's accuracy exceeds HalfV's by more than ``margin``. ``method`` names the
    schedule under test: ``halfv`` (the adapter's default) or ``halfv-calibrated`` (each
    checkpoint's shipped ``schedule.json``, what ``halfv demo`` applies to a trained zoo
    model).
    """
    rows = _find(pooled_entries(results["entries"]), dataset=POOLED)
    lines, ok = [], True
    for family in dict.fromkeys(r["family"] for r in rows):
        halfv = _find(rows, family=family, method=method, view="budget", budget="default")
        if not halfv or halfv[0]["retention"] is None:
            why = (
                f"no {method} result at budget 'default'"
                if not halfv
                else "the unpruned accuracy is 0, so retention is undefined (untrained model?)"
            )
            lines.append(f"FAIL {family}: {why}")
            ok = False
            continue
        h = halfv[0]
        passed = h["retention"] >= min_retention
        ok &= passed
        lines.append(
            f"{'ok  ' if passed else 'FAIL'} {family}: {method} retention "
            f"{h['retention']:.3f} (accuracy {h['accuracy']:.3f}, {h['n']} questions, "
            f"FLOPs ratio {h['flops_ratio']:.3f}) {'>=' if passed else '<'} {min_retention}"
        )
        randoms = _find(rows, family=family, method="random", budget="default")
        if not randoms:
            lines.append(f"FAIL {family}: no random baseline at the default budget to compare")
            ok = False
        for r in randoms:
            versus = f"random ({r['view']} view, FLOPs ratio {r['flops_ratio']:.3f})"
            if alpha is None:
                passed = h["accuracy"] >= r["accuracy"] - margin
                ok &= passed
                lines.append(
                    f"{'ok  ' if passed else 'FAIL'} {family}: {method} accuracy "
                    f"{h['accuracy']:.3f} {'>=' if passed else '<'} {versus} "
                    f"{r['accuracy']:.3f}" + (f" - {margin}" if margin else "")
                )
                continue
            ours = _pooled_hits(results["entries"], family=family, method=method,
                                view="budget", budget="default")  # fmt: skip
            theirs = _pooled_hits(results["entries"], family=family, method="random",
                                  view=r["view"], budget="default")  # fmt: skip
            if ours is None or theirs is None:
                lines.append(
                    f"FAIL {family}: no per-question hits for the paired test (entries "
                    "written before halfv recorded them, e.g. resumed from an older "
                    "results.json): rerun without --resume, or use --check-margin instead "
                    "of --check-alpha"
                )
                ok = False
                continue
            only_ours, only_theirs, p = paired_sign_test(ours, theirs)
            passed = p >= alpha
            ok &= passed
            lines.append(
                f"{'ok  ' if passed else 'FAIL'} {family}: {method} accuracy "
                f"{h['accuracy']:.3f} vs {versus} {r['accuracy']:.3f}: only {method} right "
                f"on {only_ours}, only random on {only_theirs}; random ahead at "
                f"p = {p:.3f} ({'>=' if passed else '<'} {alpha})"
            )
    if not rows:
        lines.append("FAIL: the results hold no entries")
        ok = False
    return CheckOutcome(ok, lines)
