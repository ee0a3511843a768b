"""``halfv bench accuracy``: accuracy retention of HalfV and baselines on the zoo VLMs.

Examples::

    # full run (GPU): every family, method, budget and view on both test splits
    halfv bench accuracy --device cuda --out docs/assets/accuracy \\
        --update-docs docs/benchmarks.md
    # CI: ~100 questions per backbone, each checkpoint's shipped schedule against random
    # (about 15 min on 2 cores; image features are reused across runs on the CPU)
    halfv bench accuracy --device cpu --limit 50 --budgets default \\
        --methods halfv-calibrated,random --views budget --batch-size 16 --out bench-ci \\
        --check --check-method halfv-calibrated --check-alpha 0.05
    # regenerate table.md, the plot and the docs block from OUT/results.json
    halfv bench accuracy --report-only --out docs/assets/accuracy --update-docs docs/benchmarks.md

Outputs in ``--out``: ``results.json`` (rewritten after every evaluation; ``--resume``
reuses its finished entries), ``table.md`` and ``retention_vs_flops.png``. Definitions of
budget, matched FLOPs and retention: ``docs/benchmarks.md``.

``halfv bench-accuracy`` is a deprecated alias: it runs the same command and warns.
"""

from __future__ import annotations

import argparse
import platform
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from halfv_lab.bench import DEFAULT_BUDGETS, METHODS, VIEWS, parse_budgets

if TYPE_CHECKING:
    from argparse import _SubParsersAction

    from halfv.config import PruningConfig
    from halfv_lab.bench.accuracy import BenchModel

__all__ = [
    "COMMAND",
    "DEPRECATED_ALIAS",
    "add_accuracy_parser",
    "add_parser",
    "configure_parser",
    "run",
    "run_deprecated",
]

FAMILIES = "llava,internvl,qwen2_5_vl"
DATASETS = "easyvqa,synthetic"


#: the command's name; :data:`DEPRECATED_ALIAS` is its old top-level name
COMMAND = "halfv bench accuracy"
DEPRECATED_ALIAS = "bench-accuracy"
HELP = "accuracy retention of HalfV and baseline pruners on the zoo VLMs"


def add_parser(subparsers: _SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the deprecated ``halfv bench-accuracy`` on the top-level ``subparsers``."""
    parser = _new_parser(subparsers, DEPRECATED_ALIAS, f"deprecated: use `{COMMAND}`")
    configure_parser(parser)
    parser.set_defaults(func=run_deprecated)


def add_accuracy_parser(bench_subparsers: _SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``accuracy`` on the subparsers of ``halfv bench`` (``halfv bench accuracy``)."""
    configure_parser(_new_parser(bench_subparsers, "accuracy", HELP))


def _new_parser(
    subparsers: _SubParsersAction[argparse.ArgumentParser], name: str, help_text: str
) -> argparse.ArgumentParser:
    return subparsers.add_parser(
        name,
        help=help_text,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def run_deprecated(args: argparse.Namespace) -> int:
    """``halfv bench-accuracy``: warn on stderr that the name is deprecated, then :func:`run`."""
    print(
        f"halfv: warning: `halfv {DEPRECATED_ALIAS}` is deprecated and will be removed; "
        f"use `{COMMAND}` (same options)",
        file=sys.stderr,
    )
    return run(args)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the benchmark's options to ``parser`` and set ``func=run``."""
    add = parser.add_argument
    add("--families", default=FAMILIES, help=f"zoo families (default {FAMILIES})")
    add("--datasets", default=DATASETS, help=f"test splits to answer (default {DATASETS})")
    add("--limit", type=int, help="questions per dataset (default: the whole test split)")
    add("--budgets", default=DEFAULT_BUDGETS, help=f"keep ratios or 'default' ({DEFAULT_BUDGETS})")
    add("--methods", default=",".join(METHODS), help="methods (default: all)")
    add("--views", default=",".join(VIEWS), help="budget and/or flops (default: both)")
    add("--baseline-layer", type=int, help="prune layer of the baselines (default: HalfV's IVR)")
    add(
        "--calibrated",
        action="append",
        default=[],
        metavar="FAMILY=PATH",
        help=(
            "calibrated schedule from `halfv calibrate` for method halfv-calibrated (repeat; "
            "default: the checkpoint's schedule.json)"
        ),
    )
    add(
        "--checkpoint",
        action="append",
        default=[],
        metavar="FAMILY=DIR",
        help="trained checkpoint folder of a family (default: the shipped one; repeat)",
    )
    add("--batch-size", type=int, default=16, help="questions per generate call (default 16)")
    add("--max-new-tokens", type=int, default=4, help="greedy answer length (default 4)")
    add("--device", default="auto", help="cuda, cpu, ... (default: cuda when available)")
    add("--dtype", choices=("float32", "bfloat16"), default="float32", help="model dtype")
    add("--seed", type=int, default=0, help="seed of the random baseline (default 0)")
    add(
        "--reuse-vision",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="compute each batch's image features once and reuse them in every run (exact; "
        "default: on for the CPU)",
    )
    add("--out", type=Path, default=Path("bench-results/accuracy"), help="output folder")
    add("--resume", action="store_true", help="reuse finished entries of OUT/results.json")
    add("--report-only", action="store_true", help="only rewrite outputs from OUT/results.json")
    add("--update-docs", type=Path, metavar="MD", help="fill the accuracy block of this file")
    add("--check", action="store_true", help="CI gate: exit 1 if HalfV's default schedule fails")
    add("--min-retention", type=float, default=0.95, help="--check retention floor (0.95)")
    add("--check-margin", type=float, default=0.0, help="--check slack against random (0)")
    add(
        "--check-alpha",
        type=float,
        metavar="A",
        help="--check: call HalfV below random only when random is ahead on the same "
        "questions by a one-sided exact sign test with p < A (e.g. 0.05), instead of "
        "comparing accuracies with --check-margin",
    )
    add(
        "--check-method",
        choices=("halfv", "halfv-calibrated"),
        default="halfv",
        help="--check: the HalfV schedule under test: the adapter's default (halfv) or each "
        "checkpoint's shipped schedule.json, the default that halfv demo applies to a "
        "trained zoo model (halfv-calibrated)",
    )
    add("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def _names(text: str, option: str, known: tuple[str, ...] | None = None) -> list[str]:
    names = list(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    bad = [n for n in names if known is not None and n not in known]
    if not names or bad:
        choices = f": choose from {', '.join(known)}" if known else ""
        msg = f"{option} {text!r} is not a comma-separated list of names{choices}"
        raise ValueError(msg)
    return names


def _per_family(pairs: list[str], option: str, families: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        family, sep, path = pair.partition("=")
        if not sep or not path or family not in families:
            msg = f"{option} {pair!r}: use FAMILY=PATH with FAMILY one of {', '.join(families)}"
            raise ValueError(msg)
        out[family] = path
    return out


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def _environment(device: str) -> dict[str, Any]:
    import torch
    import transformers

    from halfv.plugins import halfv_version

    if device.startswith("cuda") and torch.cuda.is_available():
        name = f"{torch.cuda.get_device_name(torch.device(device))} (CUDA {torch.version.cuda})"
    else:
        name = (
            f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
        )
    versions = {
        "halfv": halfv_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }
    return {"device_name": name, "versions": versions}


def _command(args: argparse.Namespace) -> str:
    parts = [*COMMAND.split()]
    for option in ("families", "datasets", "limit", "budgets", "methods", "views"):
        value = getattr(args, option)
        if value is not None:
            parts += [f"--{option}", str(value)]
    parts += ["--batch-size", str(args.batch_size), "--max-new-tokens", str(args.max_new_tokens)]
    parts += ["--device", args.device, "--dtype", args.dtype, "--seed", str(args.seed)]
    parts += ["--out", str(args.out)]
    if args.baseline_layer is not None:
        parts += ["--baseline-layer", str(args.baseline_layer)]
    if args.reuse_vision is not None:
        parts.append("--reuse-vision" if args.reuse_vision else "--no-reuse-vision")
    for option in ("calibrated", "checkpoint"):
        for pair in getattr(args, option):
            parts += [f"--{option}", pair]
    flags = ("resume", "check")
    parts += [f"--{flag}" for flag in flags if getattr(args, flag)]
    if args.check:
        parts += ["--min-retention", str(args.min_retention), "--check-method", args.check_method]
        if args.check_alpha is not None:
            parts += ["--check-alpha", str(args.check_alpha)]
        elif args.check_margin:
            parts += ["--check-margin", str(args.check_margin)]
    return shlex.join(parts)


def with_shipped_schedules(
    calibrated: dict[str, PruningConfig], families: list[str], checkpoints: dict[str, str]
) -> dict[str, PruningConfig]:
    """``calibrated`` plus, for each family without one, its checkpoint's ``schedule.json``."""
    from halfv_lab.zoo import calibrated_schedule

    out = dict(calibrated)
    for family in families:
        if family not in out:
            shipped = calibrated_schedule(family, checkpoints.get(family))
            if shipped is not None:
                out[family] = shipped
    return out


def _load_models(
    families: list[str],
    device: str,
    dtype: str,
    calibrated: dict[str, PruningConfig],
    checkpoints: dict[str, str],
) -> dict[str, BenchModel]:
    """Load every family's trained checkpoint (all first, so a missing one fails fast)."""
    import torch

    from halfv_lab.bench.accuracy import BenchModel
    from halfv_lab.zoo import load_smollm2, load_trained

    lm, tokenizer = load_smollm2(torch.float32)  # shared by the families, copied into each
    models = {}
    for family in families:
        model: Any
        try:
            model, processor = load_trained(
                family,
                checkpoints.get(family),
                dtype=getattr(torch, dtype),
                device=device,
                lm=lm,
                tokenizer=tokenizer,
            )
        except FileNotFoundError as exc:
            msg = f"the accuracy benchmark needs the trained zoo model of family {family!r}:\n{exc}"
            raise FileNotFoundError(msg) from exc
        models[family] = BenchModel(model.eval(), processor, calibrated=calibrated.get(family))
    return models


def _load_datasets(names: list[str], limit: int | None) -> dict[str, list[Any]]:
    try:
        from halfv_lab.data import load_split
    except ImportError as exc:
        msg = f"halfv_lab.data.load_split is not available ({exc}); the data package is required"
        raise ImportError(msg) from exc
    return {name: list(load_split(name, "test", limit)) for name in names}


def _finish(args: argparse.Namespace, results: dict[str, Any]) -> int:
    from rich.console import Console

    from halfv_lab.bench.gate import check_results
    from halfv_lab.bench.report import update_docs, write_outputs

    console = Console()
    paths = write_outputs(results, args.out)
    console.print(f"results: {args.out / 'results.json'}")
    console.print(f"table:   {paths['table']}\nplot:    {paths['plot']}")
    if args.update_docs is not None:
        console.print(f"docs:    {update_docs(args.update_docs, results, paths['plot'])}")
    if not args.check:
        return 0
    outcome = check_results(
        results,
        args.min_retention,
        args.check_margin,
        method=args.check_method,
        alpha=args.check_alpha,
    )
    for line in outcome.lines:
        console.print(line, markup=False, highlight=False)
    if not outcome.ok:
        console.print("bench accuracy --check FAILED", style="bold red")
        return 1
    console.print("bench accuracy --check passed", style="green")
    return 0


def run(args: argparse.Namespace) -> int:
    """Run the benchmark (or only its reports) and return the exit code."""
    from halfv_lab.bench import ResultsStore, load_results

    results_path = args.out / "results.json"
    if args.report_only:
        return _finish(args, load_results(results_path))
    from rich.console import Console

    from halfv.config import load_config
    from halfv_lab.bench.accuracy import BenchSettings, run_accuracy_benchmark

    families = _names(args.families, "--families", tuple(FAMILIES.split(",")))
    methods = _names(args.methods, "--methods", METHODS)
    budgets = parse_budgets(args.budgets)
    if args.check and (args.check_method not in methods or "random" not in methods):
        msg = (
            f"--check compares {args.check_method} (--check-method) with random: include "
            "both in --methods"
        )
        raise ValueError(msg)
    if args.check_alpha is not None and not 0 < args.check_alpha < 1:
        msg = f"--check-alpha {args.check_alpha}: use a probability in (0, 1), e.g. 0.05"
        raise ValueError(msg)
    if args.check and "default" not in [b.label for b in budgets]:
        msg = "--check tests HalfV's default schedule: include 'default' in --budgets"
        raise ValueError(msg)
    if args.limit is not None and args.limit < 1:
        msg = f"--limit {args.limit} must be >= 1"
        raise ValueError(msg)
    device = _device(args.device)
    settings = BenchSettings(
        methods=methods,
        budgets=budgets,
        views=_names(args.views, "--views", VIEWS),
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        device=device,
        baseline_layer=args.baseline_layer,
        seed=args.seed,
        reuse_vision=args.reuse_vision,
    )
    calibrated = {
        family: load_config(path)
        for family, path in _per_family(args.calibrated, "--calibrated", families).items()
    }
    checkpoints = _per_family(args.checkpoint, "--checkpoint", families)
    if "halfv-calibrated" in methods:
        calibrated = with_shipped_schedules(calibrated, families, checkpoints)
    datasets = _load_datasets(_names(args.datasets, "--datasets"), args.limit)
    models = _load_models(families, device, args.dtype, calibrated, checkpoints)
    meta = {
        "command": _command(args),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        **_environment(device),
        "settings": {k: str(v) for k, v in sorted(vars(args).items()) if k != "func"},
        "calibrated": {f: c.model_dump(mode="json") for f, c in calibrated.items()},
    }
    store = ResultsStore.open(results_path, meta, resume=args.resume)
    console = Console(stderr=True)
    run_accuracy_benchmark(
        models, datasets, settings, store=store, progress=not args.no_progress, console=console
    )
    store.meta["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    store.write()
    return _finish(args, store.to_dict())
