"""What a user waits for: TTFT, end-to-end latency and batch throughput, pruned vs not.

Real-size Qwen2.5-VL-7B and LLaVA-1.5-7B with random bf16 weights (``bench_cpu``'s
builders: meta device, then filled on the GPU), SDPA, every call a ``model.generate``
from pixel values, so the vision tower, the projector and the prefill are all included:

* ``ttft_ms``: ``generate(max_new_tokens=1)``;
* ``e2e_short_ms`` / ``e2e_long_ms``: ``generate`` of exactly ``--short`` (8) and
  ``--long`` (128) new tokens, batch 1;
* ``throughput``: ``generate`` of ``--throughput-tokens`` (64) new tokens at batch 8 and
  16; new tokens per second = ``batch * tokens / seconds``.

Configurations: ``unpruned`` and ``halfv`` (``halfv.apply(model)``, the default schedule);
with ``--fast-vision`` each also with ``halfv.accel.fast_vision`` (Qwen2.5-VL only). Every
call uses the same recipe (greedy, ``min_new_tokens = max_new_tokens``, so random weights
cannot end a side early on EOS). The configurations take turns within each measurement
(the order reversed every other round), after one untimed round per (model, N, batch);
CUDA events around each call after a synchronize; medians. ``--budget-s`` skips what no
longer fits (recorded as skipped). How and why: docs/speed.md, "User view".

    PYTHONPATH=src python benchmarks/bench_user_view.py --fast-vision --out R.json
    python benchmarks/bench_user_view.py --cpu-smoke --out /tmp/uv.json   # tiny, CPU
    python benchmarks/bench_user_view.py --from-json R.json --write-docs  # docs/speed.md
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

import halfv
from halfv.accel import fast_vision

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for the sibling modules
import bench_cpu as bc
from speed_report import fill_docs_block

__all__ = ["DOCS_END", "DOCS_START", "METRICS", "MODELS", "main", "markdown"]

MODELS = ("qwen2.5-vl-7b", "llava-1.5-7b")
METRICS = ("ttft_ms", "e2e_short_ms", "e2e_long_ms", "throughput")
#: ``--metrics`` may also ask for the language-side prefill alone (no pixels, no generate)
ALL_METRICS = (*METRICS, "prefill_ms")
#: ``--methods``: ``halfv`` is ``halfv.apply(model)`` (the cost gate on, min_gain 0.05);
#: ``halfv-ungated`` the same schedule with ``min_gain=None`` (every call prunes)
METHODS = ("halfv", "halfv-ungated")
DOCS_START, DOCS_END = "<!-- user-view:start -->", "<!-- user-view:end -->"
#: what --cpu-smoke overrides: tiny models, one token count, batch 1 and 2, short answers
SMOKE: dict[str, Any] = {
    "device": "cpu", "dtype": "float32", "tokens": [64], "batches": [1, 2], "warmup": 1,
    "repeats": 1, "decode_repeats": 1, "short": 2, "long": 3, "throughput_tokens": 2,
    "batch_max_tokens": 64, "budget_s": 0.0,
}  # fmt: skip


# ----------------------------------------------------------------------------- inputs
def batched(full: dict[str, Tensor], batch: int) -> dict[str, Tensor]:
    """``full`` (one sample, from ``bench_cpu.make_prompt``) repeated ``batch`` times.

    Ids, masks and token types repeat along the batch; pixel values and Qwen2.5-VL's
    ``image_grid_thw`` repeat along their image (or patch) dimension, so every sample has
    its own copy of the images.
    """
    out: dict[str, Tensor] = {}
    for key, value in full.items():
        reps = [batch] + [1] * (value.dim() - 1)
        out[key] = value.repeat(*reps)
    return out


# ----------------------------------------------------------------------------- configurations
def configs(model: Any, args: argparse.Namespace) -> list[tuple[str, str]]:
    """``(method, vision)`` pairs measured on ``model``: ``vision`` is stock or fast."""
    visions = ["stock"]
    if args.fast_vision and model.config.model_type == "qwen2_5_vl":
        visions.append("fast")
    return [(m, v) for v in visions for m in ("unpruned", *args.methods)]


@contextmanager
def attached(model: Any, method: str, vision: str, run: Run) -> Iterator[None]:
    """``model`` running ``method`` with the ``vision`` tower path; the fast path's backends
    (and why it left ``varlen``, if it did) go into ``run``."""
    with ExitStack() as stack:
        handle = stack.enter_context(fast_vision(model)) if vision == "fast" else None
        if method == "halfv":
            stack.enter_context(halfv.apply(model))
        elif method == "halfv-ungated":
            stack.enter_context(halfv.apply(model, {**_default(model), "min_gain": None}))
        yield
        if handle is not None:
            run.backends |= handle.backends_used
            if handle.varlen_error:
                run.data["meta"]["varlen_error"] = handle.varlen_error


def _default(model: Any) -> dict[str, Any]:
    return dict(halfv.get_adapter_for(model).default_config(model).model_dump())


def label(method: str, vision: str) -> str:
    """``halfv`` / ``halfv+fast``."""
    return method if vision == "stock" else f"{method}+fast"


# ----------------------------------------------------------------------------- the run
class Run:
    """Options, records, the results file (rewritten after each block) and the budget."""

    def __init__(self, args: argparse.Namespace, meta: dict[str, Any]) -> None:
        self.args = args
        self.cuda = args.device == "cuda"
        self.dtype: torch.dtype = getattr(torch, args.dtype)
        self.data: dict[str, Any] = {"meta": meta, "records": [], "speedups": []}
        self.start = time.perf_counter()
        self.backends: set[str] = set()
        args.out.parent.mkdir(parents=True, exist_ok=True)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def over_budget(self, grace: float = 0.0) -> bool:
        budget = float(self.args.budget_s)
        return budget > 0 and self.elapsed() > budget + grace

    def save(self) -> None:
        self.data["meta"]["fast_vision_backends"] = sorted(self.backends)
        self.data["meta"]["elapsed_s"] = round(self.elapsed(), 1)
        tmp = self.args.out.with_name(f"{self.args.out.name}.{time.time_ns()}.tmp")
        tmp.write_text(json.dumps(self.data, indent=1) + "\n", encoding="utf-8")
        tmp.replace(self.args.out)

    def timed(self, fn: Callable[[], Any]) -> tuple[float, Any]:
        """Milliseconds of one call (CUDA events after a synchronize, or the wall clock),
        and what it returned."""
        if self.cuda:
            torch.cuda.synchronize()
            start = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
            end = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
            start.record()
            out = fn()
            end.record()
            torch.cuda.synchronize()
            return float(start.elapsed_time(end)), out
        tick = time.perf_counter()
        out = fn()
        return (time.perf_counter() - tick) * 1e3, out


def generate_fn(model: Any, inputs: dict[str, Tensor], new: int) -> Callable[[], Any]:
    """One greedy ``generate`` of exactly ``new`` tokens (the recipe of every side)."""

    def call() -> Any:
        return model.generate(
            **inputs, max_new_tokens=new, min_new_tokens=new, do_sample=False, use_cache=True
        )

    return call


def check_length(out: Tensor, inputs: dict[str, Tensor], new: int) -> None:
    """Every side must decode exactly ``new`` tokens (raise otherwise)."""
    got = int(out.shape[1]) - int(inputs["input_ids"].shape[1])
    if got != new:
        msg = f"generated {got} tokens instead of {new}"
        raise RuntimeError(msg)


@torch.inference_mode()
def measure(
    run: Run,
    model: Any,
    inputs: dict[str, Tensor],
    row: dict[str, Any],
    metric: str,
    *,
    new: int,
    repeats: int,
    warmup: int = 0,
    warm_new: int = 0,
) -> None:
    """``metric`` of every configuration, in turn: ``warmup`` untimed rounds of
    ``warm_new``-token calls, then ``repeats`` timed ones (order reversed every other
    round); records and speed-ups."""
    pairs = configs(model, run.args)
    samples: dict[tuple[str, str], list[float]] = {p: [] for p in pairs}
    call, warm_call = generate_fn(model, inputs, new), generate_fn(model, inputs, warm_new)
    if metric == "prefill_ms":  # the language side alone: ids and mask, no pixels
        lm = {k: inputs[k] for k in ("input_ids", "attention_mask")}
        call = warm_call = lambda: model(**lm, logits_to_keep=1)
    failed: dict[tuple[str, str], str] = {}
    for r in range(warmup + repeats):
        if r > warmup and run.over_budget(grace=run.args.grace_s):
            break  # keep the rounds measured so far
        fn, want = (warm_call, warm_new) if r < warmup else (call, new)
        for pair in pairs if r % 2 == 0 else pairs[::-1]:
            if pair in failed:
                continue
            try:
                with attached(model, *pair, run):
                    ms, out = run.timed(fn)
                if metric != "prefill_ms":
                    check_length(out, inputs, want)
                del out
            except Exception as exc:  # noqa: BLE001 -- record it, go on with the others
                oom = isinstance(exc, torch.cuda.OutOfMemoryError)
                bc.emit(traceback.format_exc(limit=1 if oom else -3))
                failed[pair] = "OOM" if oom else f"error: {type(exc).__name__}: {exc}"[:300]
                if run.cuda:
                    torch.cuda.empty_cache()
                continue
            if r >= warmup:
                samples[pair].append(ms)
    batch = int(inputs["input_ids"].shape[0])
    medians: dict[tuple[str, str], float] = {}
    for pair in pairs:
        rec = {**row, "metric": metric, "method": pair[0], "vision": pair[1], "new_tokens": new}
        if pair in failed or not samples[pair]:
            run.data["records"].append({**rec, "status": failed.get(pair, "no samples")})
            continue
        med = statistics.median(samples[pair])
        medians[pair] = med
        rec |= {"samples": samples[pair], "median_ms": med}
        if metric == "throughput":
            rec["tokens_per_s"] = batch * new / (med / 1e3)
        run.data["records"].append(rec)
    speedups(run, row, metric, samples, medians)
    cells = "  ".join(f"{label(*p)} {m:9.1f}" for p, m in medians.items())
    where = f"{row['model']} N={row['tokens']} B={row['batch']}"
    bc.emit(f"[{run.elapsed():6.0f} s] {where} {metric:<13} ms: {cells}")
    run.save()


def speedups(
    run: Run,
    row: dict[str, Any],
    metric: str,
    samples: dict[tuple[str, str], list[float]],
    medians: dict[tuple[str, str], float],
) -> None:
    """Time ratios (``slower / faster``: > 1 is a speed-up): of the medians, and the
    median of the rounds' own ratios, for halfv vs unpruned and fast vs stock vision."""
    comparisons = [
        ("halfv_vs_unpruned", ("unpruned", "stock"), ("halfv", "stock")),
        ("halfv_vs_unpruned_fast", ("unpruned", "fast"), ("halfv", "fast")),
        ("fast_vs_stock_unpruned", ("unpruned", "stock"), ("unpruned", "fast")),
        ("fast_vs_stock_halfv", ("halfv", "stock"), ("halfv", "fast")),
        ("halfv_fast_vs_unpruned", ("unpruned", "stock"), ("halfv", "fast")),
    ]
    for name, base, new in comparisons:
        if base not in medians or new not in medians:
            continue
        rounds = [b / n for b, n in zip(samples[base], samples[new], strict=False)]
        run.data["speedups"].append(
            {**row, "metric": metric, "comparison": name, "ratio": medians[base] / medians[new],
             "paired_ratio": statistics.median(rounds)}
        )  # fmt: skip


def skip(run: Run, model: Any, row: dict[str, Any], metric: str, new: int) -> None:
    """Record ``metric`` of every configuration as skipped for the time budget."""
    for method, vision in configs(model, run.args):
        rec = {**row, "metric": metric, "method": method, "vision": vision, "new_tokens": new}
        run.data["records"].append({**rec, "status": "skipped (budget)"})
    run.save()


def cell(run: Run, key: str, model: Any, nominal: int, batch: int) -> None:
    """Every metric of one (model, N, batch), after ``--warmup`` untimed rounds of the
    cell's longest call (so every decode length the cell reaches has run once: cuDNN
    attention builds a graph per new length); TTFT and the short answer take ``--repeats``
    rounds, the long answer and throughput ``--decode-repeats``."""
    args = run.args
    prompt = bc.make_prompt(model, nominal, args.text_tokens)
    inputs = batched(prompt["full"], batch)
    length = int(prompt["full"]["input_ids"].shape[1])
    row = {"model": key, "tokens": prompt["visual"], "nominal": nominal, "batch": batch}
    row["prompt"] = length
    plan = [("ttft_ms", 1, args.repeats), ("prefill_ms", 0, args.repeats)]
    if batch == 1:
        plan += [("e2e_short_ms", args.short, args.repeats)]
        plan += [("e2e_long_ms", args.long, args.decode_repeats)]
    else:
        plan += [("throughput", args.throughput_tokens, args.decode_repeats)]
    plan = [p for p in plan if p[0] in args.metrics]
    longest = max((new for _, new, _ in plan), default=0)
    for i, (metric, new, repeats) in enumerate(plan):
        if run.over_budget():
            skip(run, model, row, metric, new)
            continue
        warm = {"warmup": args.warmup, "warm_new": longest} if i == 0 else {}
        measure(run, model, inputs, row, metric, new=new, repeats=repeats, **warm)
    del inputs
    if run.cuda:
        torch.cuda.empty_cache()


def build(run: Run, key: str) -> Any:
    """The model ``key`` at real size (or tiny for --cpu-smoke), random weights, SDPA."""
    tick = time.perf_counter()
    text = bc.TEXT_DIMS["tiny"] if run.args.cpu_smoke else None
    model = bc.build_model(bc.model_config(bc.KIND[key], text), run.args.device, run.dtype)
    model.generation_config.pad_token_id = model.generation_config.eos_token_id or 0
    base = halfv.get_adapter_for(model).default_config(model)
    weights = sum(p.nbytes for p in model.parameters())
    run.data["meta"]["models"][key] = {"weights_bytes": weights, "schedule": base.model_dump()}
    bc.emit(f"{key}: built in {time.perf_counter() - tick:.1f} s, {weights / 2**30:.2f} GiB")
    return model


def run_all(run: Run) -> None:
    """Batch 1 of every model first (TTFT, short, long), then the batches (TTFT, tokens/s)."""
    args = run.args
    models = {key: build(run, key) for key in args.models}
    tokens = {key: list(args.tokens) for key in models}
    if args.qwen_16k and "qwen2.5-vl-7b" in tokens:
        tokens["qwen2.5-vl-7b"].append(16384)
    if 1 in args.batches:
        for key, model in models.items():
            for n in tokens[key]:
                cell(run, key, model, n, 1)
    for n in [n for n in args.tokens if n <= args.batch_max_tokens]:
        for batch in [b for b in args.batches if b != 1]:
            for key, model in models.items():
                cell(run, key, model, n, batch)
    models.clear()
    gc.collect()


# ----------------------------------------------------------------------------- report
def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown(data: dict[str, Any]) -> str:
    """One table per model: each metric unpruned, halfv and the speed-up, per vision path."""
    meta = data["meta"]
    got: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in data["records"]:
        if "median_ms" in r:
            got[r["model"], r["tokens"], r["batch"], r["vision"], r["metric"], r["method"]] = r

    def order(k: tuple[Any, ...]) -> tuple[Any, ...]:
        return (MODELS.index(k[0]) if k[0] in MODELS else 99, k[2], k[1], k[3] != "stock")

    rows = sorted({k[:4] for k in got}, key=order)

    def value(key: tuple[Any, ...], metric: str, method: str) -> float | None:
        rec = got.get((*key, metric, method))
        if rec is None:
            return None
        return float(rec["tokens_per_s"] if metric == "throughput" else rec["median_ms"])

    head = ["visual N", "batch", "vision"]
    names = {"ttft_ms": "TTFT ms", "e2e_short_ms": f"e2e {meta['short']} tok ms",
             "e2e_long_ms": f"e2e {meta['long']} tok ms", "prefill_ms": "prefill ms",
             "throughput": f"tokens/s ({meta['throughput_tokens']} new)"}  # fmt: skip
    metrics = [m for m in ALL_METRICS if any(k[4] == m for k in got)]
    for metric in metrics:
        head += [f"{names[metric]} unpruned", "halfv", "x"]
    out: list[str] = []
    for model in dict.fromkeys(k[0] for k in rows):
        out += [f"**{model}**", "", "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
        for key in [k for k in rows if k[0] == model]:
            cells = [str(key[1]), str(key[2]), key[3]]
            for metric in metrics:
                u, h = value(key, metric, "unpruned"), value(key, metric, "halfv")
                ratio = None
                if u is not None and h is not None:
                    ratio = h / u if metric == "throughput" else u / h
                ratio_s = "-" if ratio is None else f"{ratio:.2f}x"
                cells += [_fmt(u), _fmt(h), ratio_s]
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    skipped = sum(1 for r in data["records"] if "median_ms" not in r)
    backends = ", ".join(meta.get("fast_vision_backends") or []) or "-"
    out.append(
        f"{meta['device_name']}; torch {meta['torch']}, transformers {meta['transformers']}, "
        f"{meta['dtype']}, SDPA, random weights, {meta['text_tokens']} text tokens; greedy "
        f"generate with min_new_tokens = max_new_tokens; configurations in turn, median of "
        f"{meta['repeats']} (TTFT, short) or {meta.get('decode_repeats', meta['repeats'])} "
        f"(long, tokens/s) after {meta['warmup']} untimed round(s) of the longest call per "
        f"(model, N, batch); "
        f"vision `fast` = halfv.accel.fast_vision ({backends}); x = speed-up of halfv; "
        f"{skipped} measurement(s) skipped or failed; {meta['date']}."
    )
    return "\n".join(out) + "\n"


def write_docs(table: str, docs: Path, source: Path) -> None:
    """Replace the ``user-view`` block of ``docs`` with ``table``."""
    fill_docs_block(
        table, docs, source, script="benchmarks/bench_user_view.py", start=DOCS_START, end=DOCS_END
    )


# ----------------------------------------------------------------------------- command line
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options (``--cpu-smoke`` overrides the GPU defaults)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = p.add_argument
    add("--models", nargs="+", default=list(MODELS), choices=MODELS)
    add("--tokens", nargs="+", type=int, default=[576, 1024, 4096],
        help="nominal visual tokens (LLaVA-1.5: whole 576-token images: 1152, 4608)")  # fmt: skip
    add("--qwen-16k", action="store_true", help="also Qwen2.5-VL at 16384 tokens (batch 1)")
    add("--batches", nargs="+", type=int, default=[1, 8, 16])
    add("--batch-max-tokens", type=int, default=1024,
        help="batches > 1 only up to this nominal N (time budget)")  # fmt: skip
    add("--fast-vision", action="store_true", help="also measure with halfv.accel.fast_vision")
    add("--metrics", nargs="+", choices=ALL_METRICS, default=list(METRICS),
        help="what to time (prefill_ms: the language side alone)")  # fmt: skip
    add("--methods", nargs="+", choices=METHODS, default=["halfv"],
        help="pruned sides besides unpruned (halfv-ungated: min_gain=None)")  # fmt: skip
    add("--short", type=int, default=8, help="new tokens of the short answer")
    add("--long", type=int, default=128, help="new tokens of the long answer")
    add("--throughput-tokens", type=int, default=64, help="new tokens per sample at batch > 1")
    add("--repeats", type=int, default=3, help="timed rounds of TTFT and the short answer")
    add("--decode-repeats", type=int, default=2, help="timed rounds of the long answer and "
        "throughput (decode-bound, steadier)")  # fmt: skip
    add("--warmup", type=int, default=1, help="untimed rounds per (model, N, batch)")
    add("--text-tokens", type=int, default=60)
    add("--budget-s", type=float, default=390.0,
        help="skip measurements that start after this many seconds (0: no limit)")  # fmt: skip
    add("--grace-s", type=float, default=30.0, help="stop a started measurement's rounds after "
        "budget + grace (keeps the rounds done)")  # fmt: skip
    add("--device", default="cuda")
    add("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    add("--out", type=Path, help="JSON results (benchmarks/results/user-view.json)")
    add("--from-json", type=Path, help="do not run: report this results file")
    add("--write-docs", action="store_true", help="fill the user-view block of --docs")
    add("--docs", type=Path, default=Path("docs/speed.md"))
    add("--cpu-smoke", action="store_true", help="tiny models on the CPU (seconds)")
    args = p.parse_args(argv)
    if args.cpu_smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)
    smoke = Path(tempfile.gettempdir()) / "halfv-user-view-smoke.json"
    args.out = args.out or (smoke if args.cpu_smoke else Path("benchmarks/results/user-view.json"))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark (or report ``--from-json``); returns the exit code."""
    args = parse_args(argv)
    if args.from_json is None:
        if args.device == "cuda" and not torch.cuda.is_available():
            bc.emit("CUDA is not available: run on a GPU, or use --cpu-smoke")
            return 2
        if args.cpu_smoke:
            torch.set_num_threads(1)
        import transformers

        meta = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        cpu = platform.processor() or platform.machine()
        meta |= {
            "device_name": torch.cuda.get_device_name() if args.device == "cuda" else cpu,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "halfv": halfv.__version__,
            "cuda": torch.version.cuda,
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "models": {},
        }
        run = Run(args, meta)
        bc.emit(f"bench_user_view on {meta['device_name']}: {args.models}, N {args.tokens}, "
                f"batches {args.batches}, fast vision {args.fast_vision}")  # fmt: skip
        run_all(run)
        run.save()
        data, source = run.data, args.out
    else:
        data, source = json.loads(args.from_json.read_text(encoding="utf-8")), args.from_json
    table = markdown(data)
    bc.emit(table)
    if args.write_docs:
        write_docs(table, args.docs, source)
        bc.emit(f"wrote the table into {args.docs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
