"""Decode and batched throughput of ``generate`` under one cache recipe, unpruned vs halfv.

New tokens per second of greedy ``generate`` (batch x new / time, prefill included) at
batch 1, 8 and 16 with 64 and 256 new tokens, and ms per decode step, ``(generate(n) -
generate(1)) / (n - 1)``, on ``bench_user_view``'s real-size random-weight models (its
builders, inputs and timer). Both sides run the same ``--recipe``: ``dynamic``
(``DynamicCache``, eager), ``static`` (``cache_implementation="static"``,
``disable_compile=True``: on CUDA transformers would compile by itself) or
``static-compiled`` (transformers' fast-generation recipe: static cache, decode step
compiled by ``generate`` with ``CompileConfig(fullgraph=True, dynamic=False,
mode="reduce-overhead")``, the prefill eager; ``--cpu-smoke``: the ``eager`` backend).

A (model, N, batch)'s static cache is sized once for its longest call, so all its calls
share one decode shape: one compiled graph per side and batch. Compilation is warmup: each
side first runs one untimed ``--warm-new`` (4) token call with that cache (it compiles
the step and records the CUDA graph); the JSON counts the graphs each warmup compiled and
any compiled while timing (``recompiles_timed``, 0 expected). Sides in turn, the order
reversed every other round; medians. How and why: docs/speed.md, "Decode and throughput".

    PYTHONPATH=src python benchmarks/bench_throughput.py --models llava-1.5-7b --tokens 576
    python benchmarks/bench_throughput.py --from-json A.json B.json --write-docs
    python benchmarks/bench_throughput.py --cpu-smoke --out /tmp/tp.json   # tiny, CPU
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import platform
import statistics
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for the sibling modules
import bench_cpu as bc
import bench_user_view as uv
from speed_report import fill_docs_block

import halfv
from halfv.accel import fast_vision

__all__ = ["DOCS_END", "DOCS_START", "RECIPES", "main", "markdown", "recipe_kwargs"]

RECIPES = ("dynamic", "static", "static-compiled")
SIDES = ("unpruned", "halfv")
DOCS_START, DOCS_END = "<!-- throughput:start -->", "<!-- throughput:end -->"
#: what --cpu-smoke overrides: tiny models, few tokens, batch 1 and 2, short answers
SMOKE: dict[str, Any] = {
    "device": "cpu", "dtype": "float32", "tokens": [64], "batches": [1, 2], "new": [3, 5],
    "repeats": 1, "budget_s": 0.0, "compile_backend": "eager",
}  # fmt: skip


# ----------------------------------------------------------------------------- recipe
def recipe_kwargs(recipe: str, cache_len: int, backend: str, device: str) -> dict[str, Any]:
    """The ``generate`` arguments of ``recipe`` for a static cache of ``cache_len``."""
    if recipe == "dynamic":
        return {}
    kwargs: dict[str, Any] = {"cache_implementation": "static", "max_cache_len": cache_len}
    if recipe == "static":
        return kwargs | {"disable_compile": True}
    from transformers import CompileConfig

    mode = "reduce-overhead" if backend == "inductor" and device == "cuda" else None
    config = CompileConfig(fullgraph=True, dynamic=False, backend=backend, mode=mode)  # type: ignore[arg-type]
    config._compile_all_devices = device != "cuda"  # type: ignore[assignment]  # CPU too
    return kwargs | {"compile_config": config}


def dynamo_counts() -> dict[str, int]:
    """Graphs compiled so far and graph breaks met so far (``torch._dynamo`` counters)."""
    from torch._dynamo.utils import counters

    return {
        "graphs": int(counters["stats"]["unique_graphs"]),
        "graph_breaks": int(sum(counters["graph_break"].values())),
    }


def forget_cache_length(model: Any) -> None:
    """transformers sizes a static cache to the largest length any earlier call asked for
    (``_previous_max_cache_length``); each (model, N, batch) starts from its own."""
    if hasattr(model, "_previous_max_cache_length"):
        del model._previous_max_cache_length


def generate_fn(model: Any, inputs: dict[str, Any], new: int, kwargs: dict[str, Any]) -> Any:
    """Greedy ``generate`` of exactly ``new`` tokens with the recipe's ``kwargs``."""
    greedy = {"max_new_tokens": new, "min_new_tokens": new, "do_sample": False}
    return functools.partial(model.generate, **inputs, **greedy, **kwargs)


# ----------------------------------------------------------------------------- one cell
def vision_of(model: Any, args: argparse.Namespace) -> str:
    """``fast`` (both sides) with ``--fast-vision`` on Qwen2.5-VL, else ``stock``."""
    return "fast" if args.fast_vision and model.config.model_type == "qwen2_5_vl" else "stock"


@contextmanager
def two_sides(run: uv.Run, model: Any) -> Iterator[dict[str, Any]]:
    """``unpruned``: ``model`` untouched; ``halfv``: a twin sharing its weights, with
    ``halfv.apply`` held for the whole run of the model.

    Not one model attached and detached in turn: every ``halfv.apply`` registers new
    hooks, and ``torch.compile`` guards on a module's hooks, so the compiled decode step
    would recompile at each turn. Each side keeps its own compiled step instead.
    """
    shared = {id(t): t for t in (*model.parameters(), *model.buffers())}
    twin = copy.deepcopy(model, shared)
    for name in ("_compiled_call", "_last_compile_config"):  # a copy would call the original
        twin.__dict__.pop(name, None)
    sides = {"unpruned": model, "halfv": twin}
    fast = vision_of(model, run.args) == "fast"
    with ExitStack() as stack:
        handles = [stack.enter_context(fast_vision(m)) for m in sides.values() if fast]
        stack.enter_context(halfv.apply(twin))
        try:
            yield sides
        finally:
            run.backends.update(*(handle.backends_used for handle in handles))


@torch.inference_mode()
def cell(run: uv.Run, key: str, sides: dict[str, Any], nominal: int, batch: int) -> None:
    """Warm up each side on the cell's longest call, then time ``generate(1)`` and each
    ``generate(n)`` per side in turn; record tokens/s, ms/step and the compile counts."""
    args, model = run.args, sides["unpruned"]
    prompt = bc.make_prompt(model, nominal, args.text_tokens)
    inputs = uv.batched(prompt["full"], batch)
    length = int(prompt["full"]["input_ids"].shape[1])
    news = [n for n in args.new if f"{batch}x{n}" not in args.cut]
    row = {"model": key, "tokens": prompt["visual"], "nominal": nominal, "batch": batch}
    row |= {"prompt": length, "recipe": args.recipe, "vision": vision_of(model, args)}
    for n in args.new:
        if n not in news:
            run.data["records"].append({**row, "side": "-", "new_tokens": n, "status": "cut"})
    if not news:
        return
    if run.over_budget():
        for n in news:
            run.data["records"].append({**row, "side": "-", "new_tokens": n, "status": "skipped"})
        run.save()
        return
    cache_len = length + max(news)
    kwargs = recipe_kwargs(args.recipe, cache_len, args.compile_backend, args.device)
    row["max_cache_len"] = cache_len if args.recipe != "dynamic" else None
    calls = {
        side: {n: generate_fn(m, inputs, n, kwargs) for n in [1, *news]}
        for side, m in sides.items()
    }
    warm: dict[str, dict[str, Any]] = {}
    for side in SIDES:  # compilation warmup: each side's decode shape, before any timing
        forget_cache_length(sides[side])
        before = dynamo_counts()
        warm_call = generate_fn(sides[side], inputs, args.warm_new, kwargs)
        ms, out = run.timed(warm_call)
        uv.check_length(out, inputs, args.warm_new)
        after = dynamo_counts()
        warm[side] = {"warmup_ms": ms, "graphs_compiled": after["graphs"] - before["graphs"]}
    samples: dict[tuple[str, int], list[float]] = {(s, n): [] for s in SIDES for n in calls[s]}
    before = dynamo_counts()
    for r in range(args.repeats):
        if r > 0 and run.over_budget(grace=args.grace_s):
            break
        for side in SIDES if r % 2 == 0 else SIDES[::-1]:
            forget_cache_length(sides[side])
            for n, call in calls[side].items():
                ms, out = run.timed(call)
                uv.check_length(out, inputs, n)
                samples[side, n].append(ms)
    del out
    after = dynamo_counts()
    timing = {
        "recompiles_timed": after["graphs"] - before["graphs"],
        "graph_breaks_timed": after["graph_breaks"] - before["graph_breaks"],
    }
    record(run, row, news, samples, warm | {"timing": timing})
    if run.cuda:
        torch.cuda.empty_cache()


def record(
    run: uv.Run,
    row: dict[str, Any],
    news: list[int],
    samples: dict[tuple[str, int], list[float]],
    warm: dict[str, dict[str, Any]],
) -> None:
    """Records per side and new-token count, the speed-ups, and one progress line
    (``warm``: each side's warmup, and ``timing``: what compiled while timing)."""
    batch, timing = row["batch"], warm["timing"]
    per: dict[tuple[str, int], dict[str, Any]] = {}
    for side in SIDES:
        for n in news:
            total, one = samples[side, n], samples[side, 1]
            steps = [(t - o) / (n - 1) for t, o in zip(total, one, strict=True)]
            rec = {**row, "side": side, "new_tokens": n, **warm[side], **timing}
            rec |= {"samples_ms": total, "samples_1_ms": one, "median_ms": statistics.median(total)}
            rec["tokens_per_s"] = batch * n / (rec["median_ms"] / 1e3)
            rec["ms_per_step"] = statistics.median(steps)
            rec["step_samples_ms"] = steps
            per[side, n] = rec
            run.data["records"].append(rec)
    for n in news:
        u, h = per["unpruned", n], per["halfv", n]
        rounds = [a / b for a, b in zip(u["samples_ms"], h["samples_ms"], strict=True)]
        run.data["speedups"].append(
            {**row, "new_tokens": n, "throughput_ratio": h["tokens_per_s"] / u["tokens_per_s"],
             "paired_throughput_ratio": statistics.median(rounds),
             "step_ratio": u["ms_per_step"] / h["ms_per_step"]}
        )  # fmt: skip
        bc.emit(
            f"[{run.elapsed():6.0f} s] {row['model']} N={row['tokens']} B={batch} new={n} "
            f"tok/s {u['tokens_per_s']:8.1f} -> {h['tokens_per_s']:8.1f}  ms/step "
            f"{u['ms_per_step']:6.2f} -> {h['ms_per_step']:6.2f}  (graphs warm "
            f"{warm['unpruned']['graphs_compiled']}+{warm['halfv']['graphs_compiled']}, "
            f"timed {timing['recompiles_timed']})"
        )
    run.save()


def run_all(run: uv.Run) -> None:
    """Every (model, N, batch) in the order given; each model built once."""
    for key in run.args.models:
        model = uv.build(run, key)
        with two_sides(run, model) as sides:
            for n in run.args.tokens:
                for batch in run.args.batches:
                    cell(run, key, sides, n, batch)
            sides.clear()
        del model
        torch._dynamo.reset()  # free the model's graphs (and CUDA graph pools)
        if run.cuda:
            torch.cuda.empty_cache()


# ----------------------------------------------------------------------------- report
def merged(paths: Sequence[Path]) -> dict[str, Any]:
    """Several results files as one (records concatenated; the first file's meta)."""
    files = [json.loads(p.read_text(encoding="utf-8")) for p in paths]
    data: dict[str, Any] = {"meta": dict(files[0]["meta"]), "records": [], "speedups": []}
    for f in files:
        data["records"] += f["records"]
        data["speedups"] += f["speedups"]
    data["meta"]["sources"] = [str(p) for p in paths]
    return data


def markdown(data: dict[str, Any]) -> str:
    """One table per model: tokens/s and ms/step, unpruned, halfv and the ratio."""
    meta = data["meta"]
    got = {
        (r["model"], r["tokens"], r["batch"], r["new_tokens"], r["side"]): r
        for r in data["records"]
        if "tokens_per_s" in r
    }
    head = ["visual N", "batch", "new", "tokens/s unpruned", "halfv", "x"]
    head += ["ms/step unpruned", "halfv", "x"]
    out: list[str] = []
    for model in dict.fromkeys(k[0] for k in got):
        out += [f"**{model}**", "", "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
        keys = sorted({k[1:4] for k in got if k[0] == model})
        for n, batch, new in keys:
            u, h = (
                got.get((model, n, batch, new, "unpruned")),
                got.get((model, n, batch, new, "halfv")),
            )
            if u is None or h is None:
                continue
            cells = [str(n), str(batch), str(new)]
            cells += [f"{u['tokens_per_s']:.1f}", f"{h['tokens_per_s']:.1f}"]
            cells += [f"{h['tokens_per_s'] / u['tokens_per_s']:.2f}x"]
            cells += [f"{u['ms_per_step']:.2f}", f"{h['ms_per_step']:.2f}"]
            cells += [f"{u['ms_per_step'] / h['ms_per_step']:.2f}x"]
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    cut = {f"{r['batch']}x{r['new_tokens']}" for r in data["records"] if r.get("status") == "cut"}
    fast = sorted({r["model"] for r in got.values() if r["vision"] == "fast"}) or ["none"]
    per_cell = {(r["model"], r["tokens"], r["batch"]): r["recompiles_timed"] for r in got.values()}
    recompiled = sum(per_cell.values())
    out.append(
        f"{meta['device_name']}; torch {meta['torch']}, transformers {meta['transformers']}, "
        f"{meta['dtype']}, SDPA, random weights, {meta['text_tokens']} text tokens; recipe "
        f"`{meta['recipe']}` on both sides; greedy generate with min_new_tokens = "
        f"max_new_tokens; tokens/s = batch x new / generate time (prefill included); ms/step "
        f"= (generate(new) - generate(1)) / (new - 1); sides in turn, median of "
        f"{meta['repeats']} after one untimed (compiling) call per side and (model, N, batch); "
        f"x = speed-up of halfv; fast vision tower (both sides): {', '.join(fast)}; cut (batch "
        f"x new): {', '.join(sorted(cut)) or 'none'}; {len(data['records']) - len(got)} not run "
        f"(cut or budget); graphs compiled while timing: {recompiled}; "
        f"{meta['date']}."
    )
    return "\n".join(out) + "\n"


def run_meta(args: argparse.Namespace) -> dict[str, Any]:
    """The options, versions, device and date of a run."""
    import transformers

    meta = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    cpu = platform.processor() or platform.machine()
    return meta | {
        "device_name": torch.cuda.get_device_name() if args.device == "cuda" else cpu,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "halfv": halfv.__version__,
        "cuda": torch.version.cuda,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "models": {},
        "warmup_note": WARMUP_NOTE,
    }


# ----------------------------------------------------------------------------- command line
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options (``--cpu-smoke`` overrides the GPU defaults)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = p.add_argument
    add("--models", nargs="+", default=list(uv.MODELS), choices=uv.MODELS)
    add("--tokens", nargs="+", type=int, default=[576], help="nominal visual tokens")
    add("--batches", nargs="+", type=int, default=[1, 8, 16])
    add("--new", nargs="+", type=int, default=[64, 256], help="new tokens per call (each > 1)")
    add("--cut", nargs="*", default=[], help="BATCHxNEW pairs not to run, e.g. 16x256")
    add("--recipe", choices=RECIPES, default="static-compiled")
    add("--compile-backend", default="inductor", help="torch.compile backend (static-compiled)")
    add("--fast-vision", action="store_true", help="halfv.accel.fast_vision on both sides")
    add("--repeats", type=int, default=2, help="timed rounds per (model, N, batch)")
    add("--warm-new", type=int, default=4, help="new tokens of each side's untimed call")
    add("--text-tokens", type=int, default=60)
    add("--budget-s", type=float, default=270.0, help="skip cells starting later (0: no limit)")
    add("--grace-s", type=float, default=20.0, help="stop a cell's rounds after budget + grace")
    add("--recompile-limit", type=int, default=64, help="torch._dynamo recompile limit")
    add("--device", default="cuda")
    add("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    add("--out", type=Path, help="JSON results")
    add("--from-json", type=Path, nargs="+", help="do not run: report these results files")
    add("--write-docs", action="store_true", help="fill the throughput block of --docs")
    add("--docs", type=Path, default=Path("docs/speed.md"))
    add("--cpu-smoke", action="store_true", help="tiny models on the CPU (seconds)")
    args = p.parse_args(argv)
    if args.cpu_smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)
    if min(args.new) < 2:
        p.error("--new: each count must be at least 2 (ms/step divides by new - 1)")
    smoke = Path(tempfile.gettempdir()) / "halfv-throughput-smoke.json"
    args.out = args.out or (smoke if args.cpu_smoke else Path("benchmarks/results/throughput.json"))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark (or report ``--from-json``); returns the exit code."""
    args = parse_args(argv)
    if args.from_json is None:
        if args.device == "cuda" and not torch.cuda.is_available():
            bc.emit("CUDA is not available: run on a GPU, or use --cpu-smoke")
            return 2
        threads = torch.get_num_threads()
        if args.cpu_smoke:
            torch.set_num_threads(1)
        limits = {"recompile_limit": 1, "accumulated_recompile_limit": 4}  # torch >= 2.6
        for name, times in limits.items():
            if hasattr(torch._dynamo.config, name):
                limit = max(getattr(torch._dynamo.config, name), times * args.recompile_limit)
                setattr(torch._dynamo.config, name, limit)
        run = uv.Run(args, run_meta(args))
        where = f"{args.models}, N {args.tokens}, batches {args.batches}, new {args.new}"
        bc.emit(f"bench_throughput on {run.data['meta']['device_name']}: {where}, {args.recipe}")
        try:
            run_all(run)
        finally:
            torch.set_num_threads(threads)
            run.save()
        data, source = run.data, args.out
    else:
        data = merged(args.from_json)
        source = Path(", ".join(str(p) for p in args.from_json))
    table = markdown(data)
    bc.emit(table)
    if args.write_docs:
        fill_docs_block(
            table, args.docs, source, script="benchmarks/bench_throughput.py",
            start=DOCS_START, end=DOCS_END,
        )  # fmt: skip
        bc.emit(f"wrote the table into {args.docs}")
    return 0


WARMUP_NOTE = (
    "per (model, N, batch) each side first runs one untimed generate of warm_new tokens with "
    "the cell's cache length, which compiles its decode step (static-compiled) and records "
    "the CUDA graph; graphs_compiled counts them, recompiles_timed counts graphs compiled "
    "during the timed rounds (0: the timings exclude compilation)"
)


if __name__ == "__main__":
    sys.exit(main())
