"""Prefill, TTFT, decode and memory of real-size VLMs with random weights: pruned vs not.

Builds Qwen2.5-VL-7B, LLaVA-1.5-7B and InternVL3-8B at their real sizes with random bf16
weights (on the meta device, then filled on the GPU: ``bench_cpu.build_model``) and times
per visual-token count N: ``unpruned``; ``halfv`` (the adapter's default schedule);
``fastv-sdpa`` (top-k last-token relevance at layer 2, halfv's IVR keep, no SSR); ``ideal``
(halfv's schedule with selection that does no work: uniform IVR, uniform SSR prune);
``fastv-eager`` (unpruned, eager attention, ``output_attentions=True``). How: docs/speed.md.

    PYTHONPATH=src python benchmarks/bench_speed.py                   # the GPU run
    python benchmarks/bench_speed.py --cpu-smoke --out /tmp/s.json     # tiny models, CPU
    python benchmarks/bench_speed.py --from-json R.json --write-docs   # fill docs/speed.md
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
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

import halfv
from halfv._compat import cache_from_output
from halfv.ops.budget import kept_count
from halfv.ops.relevance import last_token_relevance
from halfv.ops.selection import farthest_point_sampling, halfv_select

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for the sibling modules
import bench_cpu as bc
from speed_report import DOCS_END, DOCS_START, METHODS, markdown, merge_results, write_docs

__all__ = ["DOCS_END", "DOCS_START", "METHODS", "MODELS", "main", "markdown"]

MODELS = tuple(bc.KIND)
TOKENS = (1024, 2048, 4096, 8192, 16384)
#: largest nominal visual-token count timed per model (16384 only for the target model)
MAX_TOKENS = {"qwen2.5-vl-7b": 16384, "llava-1.5-7b": 8192, "internvl3-8b": 8192}
#: what --cpu-smoke overrides: tiny models, two token counts, one repeat of everything
SMOKE: dict[str, Any] = {
    "device": "cpu", "dtype": "float32", "tokens": [64, 128], "warmup": 1, "repeats": 2,
    "calls_per_round": 1,
    "ttft_max_tokens": 64, "decode_tokens": 4, "decode_at": [128], "decode_repeats": 1,
    "fps_micro": [256, 64, 64],
}  # fmt: skip


def eager_fits(model: Any, tokens: int) -> bool:
    """Whether eager attention with ``output_attentions=True`` fits in free GPU memory.

    Counts every layer's kept attention map (2 bytes per entry) plus one layer's float32
    softmax and its copies (8 bytes per entry), against 90 % of the free memory.
    """
    torch.cuda.empty_cache()  # memory the caching allocator holds counts as free
    cfg = model.config.get_text_config()
    entries = cfg.num_attention_heads * tokens * tokens
    return bool(entries * (2 * cfg.num_hidden_layers + 8) < 0.9 * torch.cuda.mem_get_info()[0])


class Run:
    """The options of one run, its records, and the JSON file rewritten after each record."""

    def __init__(self, args: argparse.Namespace, meta: dict[str, Any]) -> None:
        self.args = args
        self.data: dict[str, Any] = {"meta": meta, "records": []}
        self.cuda = args.device == "cuda"
        self.dtype: torch.dtype = getattr(torch, args.dtype)
        self.micro: dict[tuple[Any, ...], float] = {}
        args.out.parent.mkdir(parents=True, exist_ok=True)

    def time(self, fn: Callable[[], Any], warmup: int | None = None) -> list[float]:
        """Milliseconds of ``args.repeats`` calls after ``warmup`` (default ``args.warmup``)."""
        warm = self.args.warmup if warmup is None else warmup
        return bc.time_ms(fn, warm, self.args.repeats, self.cuda)

    def measured(self) -> set[tuple[Any, ...]]:
        """``(model, tokens, method, metric)`` of every record so far."""
        return {
            (r["model"], r.get("tokens"), r["method"], r["metric"]) for r in self.data["records"]
        }

    def add(self, record: dict[str, Any]) -> None:
        """Store ``record``, save the file, print one progress line."""
        self.data["records"].append(record)
        tmp = self.args.out.with_name(f"{self.args.out.name}.{time.time_ns()}.tmp")  # unique
        tmp.write_text(json.dumps(self.data, indent=1) + "\n", encoding="utf-8")
        tmp.replace(self.args.out)
        value = record.get("value")
        shown = record.get("status", "") if value is None else f"{value:.3f}"
        where = f"{record['model']} N={record.get('tokens', '-')}"
        bc.emit(f"  {where} {record['method']:<11} {record['metric']:<19} {shown}")


def measure_model(run: Run, key: str) -> None:
    """Every metric of one model at every token count; the model is freed on return."""
    args, tick = run.args, time.perf_counter()
    text = bc.TEXT_DIMS["tiny"] if args.cpu_smoke else None
    model = bc.build_model(bc.model_config(bc.KIND[key], text), args.device, run.dtype)
    model.generation_config.pad_token_id = model.generation_config.eos_token_id or 0
    base = halfv.get_adapter_for(model).default_config(model)
    weights = sum(p.nbytes for p in model.parameters())
    run.data["meta"]["models"][key] = {"weights_bytes": weights, "schedule": base.model_dump()}
    built = f"built in {time.perf_counter() - tick:.1f} s, {weights / 2**30:.2f} GiB"
    bc.emit(f"{key}: {built}; halfv IVR {base.ivr_layer}, SSR {base.ssr_mode} {base.ssr_layer}")
    for nominal in [n for n in args.tokens if n <= (args.max_tokens or MAX_TOKENS[key])]:
        prompt = bc.make_prompt(model, nominal, args.text_tokens)
        length = int(prompt["lm"]["input_ids"].shape[1])
        row = {"model": key, "tokens": prompt["visual"], "nominal": nominal, "prompt": length}
        ready: dict[str, list[int] | None] = {}  # method -> kept visual tokens per layer
        for method in args.methods:
            guarded(run, {**row, "method": method}, first_call, model, prompt, ready)
        measure_prefill(run, model, prompt, row, ready)
        for method in [m for m in args.methods if m in ready and m != "fastv-eager"]:
            guarded(run, {**row, "method": method}, later_metrics, model, prompt)
        micro(run, model, base, {**row, "method": "selection"})
    del model
    gc.collect()
    if run.cuda:
        torch.cuda.empty_cache()


def guarded(run: Run, row: dict[str, Any], fn: Callable[..., Any], *args: Any) -> None:
    """Run ``fn(run, *args, row)``; record a failure (OOM or error) instead of stopping."""
    try:
        fn(run, *args, row)
    except Exception as exc:  # noqa: BLE001 -- record it, go on with the next method
        oom = isinstance(exc, torch.cuda.OutOfMemoryError)
        bc.emit(traceback.format_exc(limit=1 if oom else -3))
        status = "OOM" if oom else f"error: {type(exc).__name__}: {exc}"[:300]
        key = (row["model"], row["tokens"], row["method"], "prefill_ms")
        metric = "error" if key in run.measured() else "prefill_ms"  # keep a measured prefill
        run.add({**row, "metric": metric, "status": status})


def _prefill(model: Any, lm: dict[str, Tensor], method: str) -> Callable[[], Any]:
    eager = method == "fastv-eager"
    return lambda: model(**lm, logits_to_keep=1, output_attentions=True if eager else None)


@torch.inference_mode()
def first_call(
    run: Run,
    model: Any,
    prompt: dict[str, Any],
    ready: dict[str, list[int] | None],
    row: dict[str, Any],
) -> None:
    """One prefill of a method: peak memory, KV-cache bytes and the kept token counts.

    Adds ``method: kept`` to ``ready`` if the method can be timed; skips eager attention
    that would not fit.
    """
    method = row["method"]
    if method == "fastv-eager" and run.cuda and not eager_fits(model, row["prompt"]):
        run.add({**row, "metric": "prefill_ms", "status": "OOM (predicted)"})
        return
    with bc.attach(model, method) as handle:
        if run.cuda:
            torch.cuda.reset_peak_memory_stats()
        out = _prefill(model, prompt["lm"], method)()
        kv = bc.cache_bytes(cache_from_output(out))
        del out
        peak = torch.cuda.max_memory_allocated() if run.cuda else None
        stats = getattr(handle, "stats", None)
        kept = stats.kept_visual_per_layer() if stats is not None else None
    run.add({**row, "metric": "kv_cache_bytes", "value": float(kv)})
    if peak is not None:
        run.add({**row, "metric": "peak_bytes", "value": float(peak)})
    ready[method] = kept


@torch.inference_mode()
def measure_prefill(
    run: Run,
    model: Any,
    prompt: dict[str, Any],
    row: dict[str, Any],
    ready: dict[str, list[int] | None],
) -> None:
    """Prefill of every ready method, **in turn**: ``--repeats`` rounds; in each, every
    method is attached and timed ``--calls-per-round`` times (after an untimed call) and
    the round keeps the median; the order is reversed every other round.

    The pruned paths are bound by the host CPU, whose speed drifts on a shared VM; timing
    each method in its own block let a slow minute land on one method only. In turn, a
    drift hits all alike, and ``halfv - ideal`` is taken per round (the median of the
    rounds' own differences) as well as between the medians.
    """
    args, methods = run.args, list(ready)
    samples: dict[str, list[float]] = {m: [] for m in methods}
    for r in range(args.repeats):
        for method in methods if r % 2 == 0 else methods[::-1]:
            if method not in samples:
                continue  # failed in an earlier round
            guarded(run, {**row, "method": method}, _timed_prefill, model, prompt, samples)
            if len(samples[method]) <= r:
                del samples[method]
    for method, times in samples.items():
        record = {**row, "method": method, "metric": "prefill_ms", "samples": times}
        run.add({**record, "value": statistics.median(times), "kept": ready[method]})
    if {"halfv", "ideal"} <= samples.keys():
        paired = [h - i for h, i in zip(samples["halfv"], samples["ideal"], strict=True)]
        extra = {"samples": paired, "rounds": len(paired)}
        run.add({**row, "method": "halfv", "metric": "minus_ideal_ms", **extra,
                 "value": statistics.median(paired)})  # fmt: skip


def _timed_prefill(
    run: Run, model: Any, prompt: dict[str, Any], samples: dict[str, list[float]], row: dict
) -> None:
    """One round of ``row['method']``: the median of ``--calls-per-round`` timed prefills
    into ``samples``, after untimed ones (the first round: ``--warmup`` minus the first
    call, later rounds: one, after re-attaching)."""
    method, calls = row["method"], run.args.calls_per_round
    warm = max(1, run.args.warmup - 1) if not samples[method] else 1
    with bc.attach(model, method):
        times = bc.time_ms(_prefill(model, prompt["lm"], method), warm, calls, run.cuda)
    samples[method].append(statistics.median(times))


@torch.inference_mode()
def later_metrics(run: Run, model: Any, prompt: dict[str, Any], row: dict[str, Any]) -> None:
    """TTFT (vision tower included) and decode of one method, timed in a block."""
    args = run.args
    with bc.attach(model, row["method"]):
        ttft = not args.skip_ttft and row["nominal"] <= args.ttft_max_tokens
        if ttft and row["method"] in args.ttft_methods:
            t = run.time(lambda: model(**prompt["full"], logits_to_keep=1))
            run.add({**row, "metric": "ttft_ms", "value": statistics.median(t), "samples": t})
        decode = args.decode_tokens and row["nominal"] in args.decode_at
        if decode and row["method"] in args.decode_methods:
            measure_decode(run, model, prompt["full"], row)


def measure_decode(run: Run, model: Any, lm: dict[str, Tensor], row: dict[str, Any]) -> None:
    """Greedy decode per token: ``(generate(new) - generate(1)) / (new - 1)``.

    ``lm`` is the full prompt, pixels included, as a user calls ``generate``: without
    ``image_grid_thw`` Qwen2.5-VL cannot cache its rope deltas and recomputes positions
    at every step, a path no real call takes. Both calls run the same vision tower,
    prefill (pruning included) and setup, so the difference is the ``new - 1`` decode
    steps alone. (The first runs subtracted the language-only prefill median from a
    language-only ``generate`` instead.)
    """
    new = max(2, run.args.decode_tokens)

    def generate(tokens: int) -> Any:
        return model.generate(**lm, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)

    bc.time_ms(lambda: generate(min(8, new)), 1, 0, run.cuda)  # warm the decode kernels
    longs, shorts = [], []
    for _ in range(run.args.decode_repeats):  # interleaved, so drifts hit both alike
        longs += bc.time_ms(lambda: generate(new), 0, 1, run.cuda)
        shorts += bc.time_ms(lambda: generate(1), 0, 1, run.cuda)
    per = statistics.median(longs) - statistics.median(shorts)
    extra = {"generate_ms": longs, "generate_1_ms": shorts, "new_tokens": new}
    run.add({**row, "metric": "decode_ms_per_token", "value": per / (new - 1), **extra})


@torch.inference_mode()
def micro(run: Run, model: Any, base: halfv.PruningConfig, row: dict[str, Any]) -> None:
    """Selection alone on random data of the real shape: FPS, halfv_select, relevance.

    ``keep`` is halfv's IVR budget for the row's visual tokens; the relevance pass is the
    IVR one (no RoPE) of the layer before the IVR layer over a ``prompt``-row hidden state.
    """
    dev, n, t = run.args.device, row["tokens"], row["prompt"]
    adapter = halfv.get_adapter_for(model)
    parts = adapter.attention_parts(adapter.decoder_layers(model)[base.ivr_layer - 1])
    ivr = halfv.get_ivr_policy(base.ivr_policy, **base.ivr_policy_options)
    d, keep = parts.q_proj.in_features, kept_count(n, base.ivr_keep)
    share = getattr(ivr, "attention_share", 0.0)  # the policy's option, not the config's
    gen = torch.Generator().manual_seed(1)
    feats = torch.randn((1, n, d), generator=gen).to(dev, run.dtype)
    scores = torch.rand((1, n), generator=gen).to(dev)
    hidden = torch.randn((1, t, d), generator=gen).to(dev, run.dtype)
    rows, query = torch.arange(1, n + 1, device=dev), torch.tensor([t - 1], device=dev)
    segment = torch.zeros(n, dtype=torch.long, device=dev)
    where: dict[str, Any] = {"query_rows": query, "visual_rows": rows, "segment": segment}

    def relevance() -> Tensor:
        return last_token_relevance(
            hidden, **where, num_segments=1, parts=parts, rotary=None, scale=base.relevance_scaling
        )

    cases: dict[str, tuple[tuple[Any, ...], Callable[[], Any]]] = {
        "fps_ms": ((n, keep, d), lambda: farthest_point_sampling(feats, keep)),
        "halfv_select_ms": ((n, keep, d, share), lambda: halfv_select(scores, feats, keep, share)),
        "relevance_ms": ((n, t, d, parts.num_heads, parts.num_kv_heads), relevance),
    }
    for metric, (shape, fn) in cases.items():
        key = (metric, *shape)
        if key not in run.micro:
            run.micro[key] = statistics.median(run.time(fn))
        run.add({**row, "metric": metric, "value": run.micro[key], "keep": keep, "dim": d})


def fps_micro(run: Run) -> None:
    """The stand-alone FPS case (default: 4096 of 16384 tokens at D=3584)."""
    n, k, d = run.args.fps_micro
    feats = torch.randn((1, n, d), generator=torch.Generator().manual_seed(2))
    feats = feats.to(run.args.device, run.dtype)
    times = run.time(lambda: farthest_point_sampling(feats, k))
    run.micro[("fps_ms", n, k, d)] = statistics.median(times)
    record = {"model": "-", "tokens": n, "method": "selection", "metric": "fps_ms", "keep": k}
    run.add({**record, "dim": d, "value": statistics.median(times), "samples": times})


# ----------------------------------------------------------------------------- command line
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options (``--cpu-smoke`` overrides the GPU defaults)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--tokens", nargs="+", type=int, default=list(TOKENS), help="visual tokens")
    p.add_argument("--max-tokens", type=int, help="cap on --tokens for every model")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument(
        "--calls-per-round", type=int, default=3, help="prefill calls per method per round"
    )
    p.add_argument("--text-tokens", type=int, default=60)
    p.add_argument("--skip-ttft", action="store_true", help="no vision-tower (TTFT) timings")
    p.add_argument("--ttft-max-tokens", type=int, default=4096)
    p.add_argument("--ttft-methods", nargs="+", default=["unpruned", "halfv"])
    p.add_argument("--decode-tokens", type=int, default=128, help="0: no decode timings")
    p.add_argument("--decode-at", nargs="+", type=int, default=[1024, 8192])
    p.add_argument("--decode-methods", nargs="+", default=["unpruned", "halfv"])
    p.add_argument("--decode-repeats", type=int, default=2)
    fps: dict[str, Any] = {"nargs": 3, "type": int, "metavar": ("N", "K", "D")}
    p.add_argument("--fps-micro", **fps, default=[16384, 4096, 3584], help="FPS-alone case")
    p.add_argument(
        "--no-cudnn-attention",
        action="store_true",
        help="turn off cuDNN's SDPA backend (torch.backends.cuda.enable_cudnn_sdp(False))",
    )
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--out", type=Path, help="JSON file (benchmarks/results/speed.json)")
    p.add_argument(
        "--from-json",
        type=Path,
        nargs="+",
        help="do not run: report these result files (records of several runs merged)",
    )
    p.add_argument("--write-docs", action="store_true", help="fill the table block of --docs")
    p.add_argument("--docs", type=Path, default=Path("docs/speed.md"))
    p.add_argument("--cpu-smoke", action="store_true", help="tiny models on the CPU (< 20 s)")
    args = p.parse_args(argv)
    if args.cpu_smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)
    smoke = Path(tempfile.gettempdir()) / "halfv-speed-smoke.json"  # keep the checkout clean
    args.out = args.out or (smoke if args.cpu_smoke else Path("benchmarks/results/speed.json"))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark (or report ``--from-json``); returns the exit code."""
    args = parse_args(argv)
    if args.cpu_smoke:  # tiny models: a second thread only adds synchronisation
        torch.set_num_threads(1)
    if args.no_cudnn_attention:
        torch.backends.cuda.enable_cudnn_sdp(False)
    if args.from_json is None:
        if args.device == "cuda" and not torch.cuda.is_available():
            bc.emit("CUDA is not available: run on a GPU, or use --cpu-smoke")
            return 2
        import transformers

        meta = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        cpu = platform.processor() or platform.machine()
        meta |= {
            "device_name": torch.cuda.get_device_name() if args.device == "cuda" else cpu,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "halfv": halfv.__version__,
            "interleaved": True,  # prefill methods timed in turn (measure_prefill)
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "models": {},
        }
        run = Run(args, meta)
        bc.emit(f"bench_speed on {meta['device_name']}: models {args.models}, tokens {args.tokens}")
        fps_micro(run)
        for key in args.models:
            measure_model(run, key)
        data, source = run.data, args.out
    else:
        data = merge_results([json.loads(f.read_text(encoding="utf-8")) for f in args.from_json])
        source = Path(" + ".join(str(f) for f in args.from_json))
    table = markdown(data)
    bc.emit(table)
    if args.write_docs:
        write_docs(table, args.docs, source)
        bc.emit(f"wrote the table into {args.docs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
