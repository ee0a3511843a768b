"""Run transformers' model tests without halfv, at keep 1.0 and at the default schedule.

    python scripts/hf_model_tests/run.py [--sdist transformers-5.24.0.tar.gz]
        [--schedules none keep1 default] [--families llava ...] [-k EXPR]
        [--out benchmarks/results/hf-model-tests-<date>.json]

Lays the tests out with ``prepare.py`` when ``.hf-tests/v<version>`` is missing, then runs
pytest once per schedule (``HALFV_SCHEDULE``, one torch thread, ``-p no:cacheprovider``,
no ``-x``), with the plugin ``conftest_halfv.py`` recording every test's outcome and
exception. Writes one JSON file: per schedule, each test's record and the counts per
family; per halfv schedule, every test whose outcome differs from the run without halfv,
classed as

* ``refused``: a ``halfv.errors`` class (a documented limit, or a bug if at keep 1.0);
* ``assertion``: raised by the test's own code (a comparison that does not hold);
* ``raw``: any other exception raised inside torch, transformers or halfv;
* ``fixed``: failed without halfv, passes with it;

and prints the counts and the differences.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))

import prepare  # noqa: E402

SCHEDULES = ("none", "keep1", "default")


def _family(test: str) -> str:
    for family in sorted(prepare.FAMILIES, key=len, reverse=True):
        if f"/{family}/" in test:
            return family
    return "?"


def run_schedule(folder: Path, schedule: str, families: list[str], k: str | None) -> list[dict]:
    results = folder.parent / f"results-{schedule}.jsonl"
    results.unlink(missing_ok=True)
    env = {
        **os.environ,
        "HALFV_SCHEDULE": schedule,
        "HALFV_RESULTS": str(results),
        "HALFV_TORCH_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    command += [f"tests/models/{f}" for f in families]
    if k:
        command += ["-k", k]
    print(f"[{schedule}] {' '.join(command[1:])}", flush=True)
    subprocess.run(command, cwd=folder, env=env, stdout=subprocess.DEVNULL, check=False)
    if not results.exists():
        msg = f"[{schedule}] pytest wrote no results: run it by hand in {folder}"
        raise SystemExit(msg)
    return [json.loads(line) for line in results.read_text().splitlines()]


def classify(base: dict[str, Any] | None, record: dict[str, Any]) -> str | None:
    before = base["outcome"] if base else "missing"
    if before == record["outcome"]:
        return None
    if record["outcome"] != "failed":
        return "fixed" if before == "failed" else "outcome"
    if record.get("halfv_error"):
        return "refused"
    return "assertion" if str(record.get("raised_in", "")).startswith("tests/") else "raw"


def summarise(runs: dict[str, list[dict]]) -> dict[str, Any]:
    counts: dict[str, dict[str, dict[str, int]]] = {}
    for schedule, records in runs.items():
        per: dict[str, Counter[str]] = {}
        for r in records:
            per.setdefault(_family(r["test"]), Counter())[r["outcome"]] += 1
        counts[schedule] = {f: dict(c) for f, c in sorted(per.items())}
    base = {r["test"]: r for r in runs.get("none", [])}
    differences: dict[str, list[dict[str, Any]]] = {}
    for schedule, records in runs.items():
        if schedule == "none" or not base:
            continue
        rows = []
        for r in records:
            kind = classify(base.get(r["test"]), r)
            if kind is not None:
                rows.append({"kind": kind, "baseline": base.get(r["test"], {}).get("outcome"), **r})
        differences[schedule] = sorted(rows, key=lambda row: (row["kind"], row["test"]))
    return {"counts": counts, "differences": differences}


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sdist", type=Path, help="passed to prepare.py")
    parser.add_argument("--checkout", type=Path, help="passed to prepare.py")
    parser.add_argument("--dest", type=Path, default=ROOT / ".hf-tests")
    parser.add_argument("--schedules", nargs="+", default=list(SCHEDULES), choices=SCHEDULES)
    parser.add_argument("--families", nargs="+", default=list(prepare.FAMILIES))
    parser.add_argument("-k", help="pytest -k expression (say in the results what it left out)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    import torch
    import transformers

    folder = args.dest / f"v{transformers.__version__}"
    if not (folder / prepare.MODE_FILE).exists():
        prepare_args = ["--dest", str(args.dest)]
        if args.sdist:
            prepare_args += ["--sdist", str(args.sdist)]
        if args.checkout:
            prepare_args += ["--checkout", str(args.checkout)]
        prepare.main(prepare_args)
    shutil.copy(HERE / "conftest_halfv.py", folder / "conftest_halfv.py")  # the current plugin
    started = dt.datetime.now(dt.UTC)
    runs = {s: run_schedule(folder, s, args.families, args.k) for s in args.schedules}
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    out = {
        "date": started.strftime("%Y-%m-%d"),
        "started_utc": started.isoformat(timespec="seconds"),
        "wall_s": round((dt.datetime.now(dt.UTC) - started).total_seconds()),
        "halfv_commit": commit,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "source": (folder / prepare.MODE_FILE).read_text().strip(),
        "families": args.families,
        "k": args.k,
        "command": "python scripts/hf_model_tests/run.py " + " ".join(argv or sys.argv[1:]),
        **summarise(runs),
        "runs": {s: sorted(records, key=lambda r: r["test"]) for s, records in runs.items()},
    }
    path = args.out or ROOT / "benchmarks" / "results" / f"hf-model-tests-{out['date']}.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    report(out)
    print(f"\nwrote {path}")
    return path


def report(results: dict[str, Any]) -> None:
    print("| schedule | family | passed | failed | skipped |\n| --- | --- | --- | --- | --- |")
    for schedule, per in results["counts"].items():
        for family, c in per.items():
            print(
                f"| {schedule} | {family} | {c.get('passed', 0)} | {c.get('failed', 0)} "
                f"| {c.get('skipped', 0)} |"
            )
    for schedule, rows in results["differences"].items():
        kinds = Counter(row["kind"] for row in rows)
        print(f"\n## {schedule}: {len(rows)} outcomes differ from none {dict(kinds)}")
        for row in rows:
            error = row.get("error_type", "")
            print(
                f"- [{row['kind']}] {row['test']}: {row['baseline']} -> {row['outcome']}"
                f"  {error} {row.get('message', '')[:160]}"
            )


if __name__ == "__main__":
    main()
