"""Reports of the accuracy benchmark: tables, the plot, the target summary and the CI check.

Everything here reads a ``results.json`` (see :mod:`halfv_lab.bench`) and nothing else, so
``halfv bench-accuracy --report-only`` regenerates ``table.md``, ``retention_vs_flops.png``
and the block in ``docs/benchmarks.md`` from a finished run. The pooled dataset ``all``
sums the correct answers of every dataset of a backbone.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from halfv_lab.bench import BASELINES, METHODS, UNPRUNED, write_text_atomic

__all__ = [
    "DOCS_END",
    "DOCS_START",
    "POOLED",
    "markdown_report",
    "pooled_entries",
    "target_rows",
    "update_docs",
    "write_outputs",
    "write_plot",
]

POOLED = "all"
DOCS_START = "<!-- accuracy-table:start -->"
DOCS_END = "<!-- accuracy-table:end -->"
_VIEW_ORDER = {"none": 0, "budget": 1, "flops": 2}
HALFV_METHODS = ("halfv", "halfv-calibrated")
_TARGET_TITLE = (
    "**Target** (HalfV at >= 4x fewer FLOPs keeps >= 97 % and beats every baseline at "
    "equal FLOPs; datasets pooled). Rivals: every baseline entry, either view, whose FLOPs "
    "ratio is within 0.01 of the HalfV row's; `-` when none is:"
)
_TARGET_HEAD = (
    "| backbone | method | budget | FLOPs ratio | speedup | retention | >= 97 % | best "
    "baseline (its FLOPs ratio) | its retention | HalfV beats all |"
)


def pooled_entries(entries: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per-dataset entries plus a pooled ``all`` entry per (family, method, view, budget).

    Pooled accuracy is total correct / total questions; retention divides it by the pooled
    unpruned accuracy of the family; FLOPs ratio and keep are question-weighted means.
    """
    rows = [dict(e) for e in entries if e["dataset"] != POOLED]
    per_dataset = {
        (e["family"], e["dataset"]): e["accuracy"] for e in rows if e["method"] == UNPRUNED
    }
    for e in rows:
        ref = per_dataset.get((e["family"], e["dataset"]))
        e["retention"] = e["accuracy"] / ref if ref else None
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for e in rows:
        groups.setdefault((e["family"], e["method"], e["view"], e["budget"]), []).append(e)
    pooled: list[dict[str, Any]] = []
    for (family, method, view, budget), group in groups.items():
        n = sum(int(e["n"]) for e in group)

        def mean(name: str, group: list[dict[str, Any]] = group, n: int = n) -> float | None:
            vals = [(e[name], e["n"]) for e in group if e.get(name) is not None]
            return sum(v * w for v, w in vals) / n if len(vals) == len(group) and n else None

        correct = sum(float(e["correct"]) for e in group)
        pooled.append({
            "family": family, "dataset": POOLED, "method": method, "view": view,
            "budget": budget, "n": n, "correct": correct, "accuracy": correct / max(1, n),
            "keep": mean("keep"), "flops_ratio": mean("flops_ratio"),
            "agreement": mean("agreement"), "datasets": len(group),
            "matched": all(e.get("flops_matched") is not False for e in group),
        })  # fmt: skip
    reference = {p["family"]: p["accuracy"] for p in pooled if p["method"] == UNPRUNED}
    for p in pooled:
        ref = reference.get(p["family"])
        p["retention"] = p["accuracy"] / ref if ref else None
        p["speedup"] = 1.0 / p["flops_ratio"] if p["flops_ratio"] else None
    return rows + pooled


def _find(rows: Sequence[Mapping[str, Any]], **match: str) -> list[Mapping[str, Any]]:
    return [r for r in rows if all(r[k] == v for k, v in match.items())]


def target_rows(
    results: Mapping[str, Any],
    min_speedup: float = 4.0,
    min_retention: float = 0.97,
    flops_tolerance: float = 0.01,
) -> list[dict[str, Any]]:
    """The issue's target per HalfV row with ``speedup >= min_speedup`` (pooled datasets).

    Rows come from ``halfv`` (the adapter's default schedule) and ``halfv-calibrated``.
    Each says whether retention >= ``min_retention`` and whether HalfV's accuracy is at
    least every baseline's at equal FLOPs: every baseline entry, of either view and any
    budget, whose FLOPs ratio lies within ``flops_tolerance`` of the HalfV row's. The
    ``flops`` view matches the default schedule's ratio by construction; a calibrated
    schedule spends other FLOPs, so its rivals are whatever baselines land near it, and
    ``beats_baselines`` is ``None`` when none does.
    """
    rows = _find(pooled_entries(results["entries"]), dataset=POOLED)
    baselines = [r for r in rows if r["method"] in BASELINES]
    out = []
    for family in dict.fromkeys(r["family"] for r in rows):
        fast = [
            r for method in HALFV_METHODS
            for r in _find(rows, family=family, method=method, view="budget")
            if r["speedup"] is not None and r["speedup"] >= min_speedup - 1e-9
        ]  # fmt: skip
        if not fast:
            out.append({"family": family, "method": None, "budget": None})
        for h in fast:
            rivals = [
                r for r in baselines
                if r["family"] == family
                and abs(r["flops_ratio"] - h["flops_ratio"]) <= flops_tolerance + 1e-12
            ]  # fmt: skip
            best = max(rivals, key=lambda r: r["accuracy"], default=None)
            out.append({
                "family": family, "method": h["method"], "budget": h["budget"],
                "flops_ratio": h["flops_ratio"], "speedup": h["speedup"],
                "retention": h["retention"],
                "retention_ok": h["retention"] is not None and h["retention"] >= min_retention,
                "best_baseline": best and best["method"],
                "best_baseline_flops_ratio": best and best["flops_ratio"],
                "best_baseline_retention": best and best["retention"],
                "beats_baselines": None if best is None else h["accuracy"] >= best["accuracy"],
            })  # fmt: skip
    return out


def _fmt(value: object, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _header(meta: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> list[str]:
    versions = ", ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items())
    sizes = ", ".join(
        f"{r['dataset']} {r['n']}"
        for r in rows
        if r["method"] == UNPRUNED and r["dataset"] != POOLED and r["family"] == rows[0]["family"]
    )
    device, finished = meta.get("device_name", "?"), meta.get("finished", "?")
    legend = (
        f"Questions per backbone: {sizes or '?'} (test splits); greedy decoding. FLOPs ratio = "
        "pruned / unpruned prefill FLOPs of the language model (exact variant; * = matching "
        "clamped); retention = pruned / unpruned accuracy; `all` pools the datasets; agree = "
        "share of answers equal to the unpruned ones."
    )
    command = f"Command: `{meta.get('command', '?')}`"
    return [command, "", f"Device: {device}; {versions}; finished {finished}.", "", legend]


def markdown_report(results: Mapping[str, Any]) -> str:
    """Markdown: run description, the target table and one table per backbone."""
    rows = pooled_entries(results["entries"])
    if not rows:
        return "No results yet.\n"
    out = [*_header(results.get("meta", {}), rows), "", _TARGET_TITLE, "", _TARGET_HEAD]
    out.append("|---" * 10 + "|")
    for t in target_rows(results):
        if t["budget"] is None:
            out.append(f"| {t['family']} | no HalfV budget reaches 4x |" + " |" * 8)
            continue
        best = t["best_baseline"] and f"{t['best_baseline']} ({t['best_baseline_flops_ratio']:.3f})"
        cells = [t["family"], t["method"], t["budget"], _fmt(t["flops_ratio"])]
        cells += [_fmt(t["speedup"], 2), _fmt(t["retention"]), _fmt(t["retention_ok"])]
        cells += [_fmt(best), _fmt(t["best_baseline_retention"]), _fmt(t["beats_baselines"])]
        out.append("| " + " | ".join(cells) + " |")
    cols = [*dict.fromkeys(r["dataset"] for r in rows if r["dataset"] != POOLED), POOLED]
    budgets = list(dict.fromkeys(r["budget"] for r in rows))
    head = ["method", "view", "budget", "keep", "FLOPs ratio", *(f"{d} acc / ret" for d in cols)]
    for family in dict.fromkeys(r["family"] for r in rows):
        default = _first(results["entries"], family=family, method="halfv", budget="default")
        config = default.get("config")
        schedule = f" (HalfV default: {_describe(config)})" if config else ""
        out += ["", f"**{family}**{schedule}", "", "| " + " | ".join([*head, "agree"]) + " |"]
        out.append("|---" * (len(head) + 1) + "|")
        pooled = sorted(
            _find(rows, family=family, dataset=POOLED),
            key=lambda r: (budgets.index(r["budget"]), _VIEW_ORDER.get(r["view"], 9),
                           METHODS.index(r["method"]) if r["method"] in METHODS else -1),
        )  # fmt: skip
        for p in pooled:
            ident = {k: p[k] for k in ("method", "view", "budget")}
            ratio = _fmt(p["flops_ratio"]) + ("" if p["matched"] else "*")
            cells = [p["method"], p["view"], p["budget"] or "-", _fmt(p["keep"]), ratio]
            for d in cols:
                r = _first(rows, family=family, dataset=d, **ident)
                acc_ret = f"{_fmt(r.get('accuracy'))} / {_fmt(r.get('retention'))}"
                cells.append(acc_ret if r else "-")
            out.append("| " + " | ".join([*cells, _fmt(p["agreement"])]) + " |")
    return "\n".join(out) + "\n"


def _describe(config: Mapping[str, Any]) -> str:
    """``IVR @2 keep 0.25, prune @23 keep 0.05`` for a config dict."""
    text = f"IVR @{config['ivr_layer']} keep {config['ivr_keep']:g}"
    if config.get("ssr_mode", "none") == "none" or config.get("ssr_layer") is None:
        return text
    text += f", {config['ssr_mode']} @{config['ssr_layer']}"
    return text + (f" keep {config['ssr_keep']:g}" if config["ssr_mode"] == "prune" else "")


def _first(rows: Sequence[Mapping[str, Any]], **match: str) -> Mapping[str, Any]:
    found = _find(rows, **match)
    return found[0] if found else {}


def write_plot(results: Mapping[str, Any], path: str | Path) -> Path:
    """Retention (datasets pooled) against FLOPs ratio, one panel per backbone, as PNG."""
    import matplotlib as mpl

    mpl.use("Agg")
    import matplotlib.pyplot as plt

    rows = _find(pooled_entries(results["entries"]), dataset=POOLED)
    families = list(dict.fromkeys(r["family"] for r in rows)) or ["(no results)"]
    fig, axes = plt.subplots(1, len(families), figsize=(4.5 * len(families), 4), squeeze=False)
    for ax, family in zip(axes[0], families, strict=True):
        for method in METHODS:
            pts = sorted(
                (r["flops_ratio"], r["retention"])
                for r in _find(rows, family=family, method=method)
                if r["retention"] is not None and r["flops_ratio"] is not None
            )
            if pts:
                style = "o-" if method.startswith("halfv") else "s--"
                ax.plot(*zip(*pts, strict=True), style, label=method, markersize=4)
        ax.axhline(0.97, color="grey", lw=0.8, ls=":")
        ax.axvline(0.25, color="grey", lw=0.8, ls=":")
        ax.plot([1.0], [1.0], "k*", label=UNPRUNED)
        ax.set(title=family, xlabel="FLOPs ratio (pruned / unpruned, exact)", ylabel="retention")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return path


def write_outputs(results: Mapping[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write ``table.md`` and ``retention_vs_flops.png`` into ``out_dir``."""
    out = Path(out_dir)
    return {
        "table": write_text_atomic(out / "table.md", markdown_report(results)),
        "plot": write_plot(results, out / "retention_vs_flops.png"),
    }


def update_docs(docs: str | Path, results: Mapping[str, Any], plot: Path | None = None) -> Path:
    """Replace the block between :data:`DOCS_START` and :data:`DOCS_END` in ``docs``.

    The plot is linked when it lies under the docs file's folder (MkDocs can serve it).

    Raises:
        ValueError: the markers are missing or out of order.
    """
    docs = Path(docs)
    text = docs.read_text(encoding="utf-8")
    start, end = text.find(DOCS_START), text.find(DOCS_END)
    if start < 0 or end < start:
        msg = f"{docs} has no {DOCS_START} ... {DOCS_END} block to fill"
        raise ValueError(msg)
    body = markdown_report(results)
    if plot is not None and plot.resolve().is_relative_to(docs.parent.resolve()):
        rel = plot.resolve().relative_to(docs.parent.resolve()).as_posix()
        body += f"\n![Retention against FLOPs ratio]({rel})\n"
    new = text[: start + len(DOCS_START)] + "\n" + body + text[end:]
    return write_text_atomic(docs, new)
