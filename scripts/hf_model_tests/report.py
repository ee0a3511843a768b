"""Compare junit results of transformers' model tests without halfv and with halfv.

    python scripts/hf_model_tests/report.py .hf-tests/results/none.xml \\
        .hf-tests/results/keep1.xml .hf-tests/results/default.xml

Prints, per family and run, passed / failed (incl. errors) / skipped counts, then every
test whose outcome differs from the first (baseline) run, with the first line of its
failure message, grouped by family.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from pathlib import Path

FAMILIES = ("llava_next", "llava", "qwen2_5_vl", "internvl")


def family(classname: str) -> str:
    for f in FAMILIES:
        if f".{f}." in f".{classname}.":
            return f
    return "?"


def outcomes(path: Path) -> dict[str, tuple[str, str]]:
    out: dict[str, tuple[str, str]] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        state, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                state = "skipped" if tag == "skipped" else "failed"
                message = (node.get("message") or "").strip().splitlines()[0:1]
                message = message[0][:200] if message else ""
                break
        out[name] = (state, message)
    return out


def main(paths: list[str]) -> None:
    runs = {Path(p).stem: outcomes(Path(p)) for p in paths}
    base_name = next(iter(runs))
    print("| run | family | passed | failed | skipped |\n| --- | --- | --- | --- | --- |")
    for name, res in runs.items():
        counts: dict[str, Counter[str]] = defaultdict(Counter)
        for test, (state, _) in res.items():
            counts[family(test)][state] += 1
        for fam in sorted(counts):
            c = counts[fam]
            print(f"| {name} | {fam} | {c['passed']} | {c['failed']} | {c['skipped']} |")
    base = runs[base_name]
    for name, res in list(runs.items())[1:]:
        print(f"\n## {name}: outcomes that differ from {base_name}\n")
        for test in sorted(set(base) | set(res)):
            b = base.get(test, ("missing", ""))
            r = res.get(test, ("missing", ""))
            if b[0] != r[0]:
                print(f"- {test}: {b[0]} -> {r[0]}  {r[1]}")


if __name__ == "__main__":
    main(sys.argv[1:])
