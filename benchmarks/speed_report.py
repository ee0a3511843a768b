"""The tables of ``bench_speed.py``: markdown from a results file, merging, the docs block.

Reads only the JSON that ``bench_speed.py`` writes, so ``--from-json`` can report runs made
elsewhere (a GPU machine) without torch doing any work.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "DOCS_END",
    "DOCS_START",
    "METHODS",
    "fill_docs_block",
    "markdown",
    "merge_results",
    "write_docs",
]

METHODS = ("unpruned", "halfv", "ideal", "fastv-sdpa", "fastv-eager")
DOCS_START, DOCS_END = "<!-- speed-table:start -->", "<!-- speed-table:end -->"
Index = dict[tuple[Any, ...], dict[str, Any]]


def _cell(record: dict[str, Any] | None, scale: float = 1.0, digits: int = 1) -> str:
    """A table cell: the value, the status's first word (``OOM``, ``error``) or ``-``."""
    if record is None:
        return "-"
    if record.get("value") is None:
        return str(record.get("status", "-")).split(":")[0].split(" (")[0]
    return f"{record['value'] * scale:.{digits}f}"


def _prefill_rows(index: Index, model: str, counts: list[int]) -> list[str]:
    head = ["visual N", *METHODS, "speed-up", "of ideal", "halfv - ideal", "FPS"]
    head += ["halfv_select", "relevance"]
    lines = ["| " + " | ".join(head) + " |", "|---:" * len(head) + "|"]
    for n in counts:
        got = {m: index.get((model, n, m, "prefill_ms")) for m in METHODS}
        ok = {m: r["value"] for m, r in got.items() if r and r.get("value") is not None}
        speed = (
            f"{ok['unpruned'] / ok['halfv']:.2f}x" if {"unpruned", "halfv"} <= ok.keys() else "-"
        )
        paired = index.get((model, n, "halfv", "minus_ideal_ms"))
        over = f"{ok['halfv'] - ok['ideal']:.1f}" if {"halfv", "ideal"} <= ok.keys() else "-"
        if paired is not None and paired.get("value") is not None:
            over = f"{paired['value']:.1f}"  # the median of the rounds' own differences
        micro = ("fps_ms", "halfv_select_ms", "relevance_ms")
        sel = [_cell(index.get((model, n, "selection", m)), digits=2) for m in micro]
        share = _share_of_ideal(paired, got["halfv"], got["ideal"])
        cells = [str(n), *(_cell(got[m]) for m in METHODS), speed, share, over, *sel]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _share_of_ideal(
    paired: dict[str, Any] | None, halfv: dict[str, Any] | None, ideal: dict[str, Any] | None
) -> str:
    """halfv's speed-up as a share of the ideal one: the median of the rounds' own
    ``ideal / halfv`` when the methods were timed in turn (``paired`` exists), else ``-``."""
    if paired is None or not halfv or not ideal:
        return "-"
    rounds = zip(halfv.get("samples", []), ideal.get("samples", []), strict=True)
    ratios = [i / h for h, i in rounds]
    return f"{statistics.median(ratios):.1%}".replace("%", " %") if ratios else "-"


def _other_rows(index: Index, model: str, counts: list[int]) -> list[str]:
    lines = [
        "| visual N | method | TTFT ms | decode ms/token | peak GiB | KV cache MiB |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    metrics = ("ttft_ms", "decode_ms_per_token", "peak_bytes", "kv_cache_bytes")
    for n in counts:
        for m in METHODS:
            got = [index.get((model, n, m, x)) for x in metrics]
            if all(r is None or r.get("value") is None for r in got):
                continue
            cells = [_cell(got[0]), _cell(got[1], digits=2), _cell(got[2], 2**-30, 2)]
            lines.append(f"| {n} | {m} | " + " | ".join([*cells, _cell(got[3], 2**-20)]) + " |")
    return lines


def markdown(data: dict[str, Any]) -> str:
    """Markdown of a result file: per model, prefill ms per method, then TTFT/decode/memory."""
    meta, index = data["meta"], Index()
    timing = (
        f"prefill: methods in turn, median of {meta['repeats']} rounds of "
        f"{meta.get('calls_per_round', 1)} calls each (halfv - ideal: "
        "median of the rounds' differences); TTFT: median of "
        f"{meta['repeats']} after {meta['warmup']} warm-up"
        if meta.get("interleaved")
        else f"median of {meta['repeats']} after {meta['warmup']} warm-up"
    )
    for r in data["records"]:
        index[(r["model"], r.get("tokens"), r["method"], r["metric"])] = r
    out = [
        (
            f"{meta['device_name']}; torch {meta['torch']}, transformers {meta['transformers']}, "
            f"{meta['dtype']}, random weights, {meta['text_tokens']} text tokens; {timing}; "
            f"{meta['date']}. Times in ms."
        )
    ]
    for model, info in meta["models"].items():
        s = info["schedule"]
        counts = sorted({k[1] for k in index if k[0] == model})
        out += [
            "",
            f"**{model}** ({info['weights_bytes'] / 2**30:.1f} GiB of weights; halfv: IVR at "
            f"layer {s['ivr_layer']} keeping {s['ivr_keep']:g}, SSR {s['ssr_mode']} at layer "
            f"{s['ssr_layer']}"
            + (f" keeping {s['ssr_keep']:g})" if s["ssr_mode"] == "prune" else ")"),
            "",
            *_prefill_rows(index, model, counts),
            "",
            *_other_rows(index, model, counts),
        ]
    fps_alone: dict[str, list[str]] = {}  # one line per case; merged runs list each value
    for r in data["records"]:
        if r["model"] == "-":
            where = f"{r['keep']} of {r['tokens']} tokens at D={r['dim']}"
            fps_alone.setdefault(where, []).append(_cell(r, digits=2))
    for where, values in fps_alone.items():
        runs = f" ({len(values)} runs, one per results file)" if len(values) > 1 else ""
        out += ["", f"FPS alone, {where}: {' / '.join(values)} ms{runs}."]
    return "\n".join(out) + "\n"


def merge_results(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One result set from runs of the same command split by ``--models``: the first run's
    meta (its date, versions and GPU), the models of all, and every record in order.
    Runs on different GPUs or software cannot be merged into one table."""
    first = runs[0]["meta"]
    for other in runs[1:]:
        for key in ("device_name", "torch", "transformers", "dtype"):
            if other["meta"].get(key) != first.get(key):
                theirs = other["meta"].get(key)
                msg = f"cannot merge runs with different {key}: {first.get(key)!r}, {theirs!r}"
                raise ValueError(msg)
    meta = dict(first, models={k: v for r in runs for k, v in r["meta"]["models"].items()})
    return {"meta": meta, "records": [rec for r in runs for rec in r["records"]]}


def fill_docs_block(
    table: str,
    docs: Path,
    source: Path,
    *,
    script: str,
    start: str = DOCS_START,
    end: str = DOCS_END,
) -> None:
    """Replace the block between ``start`` and ``end`` in ``docs`` with ``table``, noting
    the ``script`` and results ``source`` that wrote it."""
    text = docs.read_text(encoding="utf-8")
    if start not in text or end not in text:
        msg = f"{docs} has no {start} ... {end} block to fill: add the two marker lines"
        raise ValueError(msg)
    head, rest = text.split(start, 1)
    tail = rest.split(end, 1)[1]
    note = f"<!-- generated by {script} --write-docs from {source} -->"
    docs.write_text(f"{head}{start}\n{note}\n\n{table}\n{end}{tail}", encoding="utf-8")


def write_docs(table: str, docs: Path, source: Path) -> None:
    """Replace the speed-table block of ``docs`` with ``table``."""
    fill_docs_block(table, docs, source, script="benchmarks/bench_speed.py")
