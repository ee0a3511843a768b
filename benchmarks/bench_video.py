"""Video and the new backbones on the GPU: prefill, TTFT and KV-cache memory, unpruned vs halfv.

``--video``: a 10-second clip sampled at 2 fps (20 frames of 720x1280 pixels) through the
real Qwen2.5-VL / Qwen3-VL video processor resize rules (:mod:`video_models`), on
Qwen2.5-VL-7B- and Qwen3-VL-8B-shaped models (random bf16 weights, SDPA). Methods:
``unpruned``, ``halfv`` (the default schedule, ``video_budget="per_video"``) and
``halfv-frame`` (the same with ``"per_frame"``).

``--backbones``: Qwen3-VL-8B- and Gemma-3-12B-shaped models at 1024 and 4096 visual
tokens (one Qwen3-VL image; 4 and 16 Gemma 3 images), ``unpruned`` and ``halfv``.

Metrics (medians; the methods take turns within each round, after warm-up rounds):
``prefill_ms`` (the language side: placeholders, no pixels), ``ttft_ms``
(``generate(max_new_tokens=1)`` from pixel values: vision tower included), ``kv_bytes``
(the KV cache a prefill leaves) and ``peak_bytes`` (peak device memory of the prefill
above the model's weights). A method that fails (e.g. no adapter for a family) is recorded
with its error and the run goes on.

    PYTHONPATH=src python benchmarks/bench_video.py --video --backbones --out R.json
    python benchmarks/bench_video.py --cpu-smoke --video --backbones   # tiny, CPU, seconds
    python benchmarks/bench_video.py --from-json R.json --write-docs   # docs/video.md, speed.md
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
from contextlib import nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

import halfv
from halfv._compat import cache_from_output

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for the sibling modules
import bench_cpu as bc
import video_models as vm
from speed_report import fill_docs_block

__all__ = ["BACKBONE_DOCS", "VIDEO_DOCS", "main", "markdown"]

VIDEO_MODELS = ("qwen2.5-vl-7b", "qwen3-vl-8b")
BACKBONE_MODELS = ("qwen3-vl-8b", "gemma-3-12b")
VIDEO_DOCS = ("docs/video.md", "<!-- video-bench:start -->", "<!-- video-bench:end -->")
BACKBONE_DOCS = ("docs/speed.md", "<!-- backbones:start -->", "<!-- backbones:end -->")
#: what --cpu-smoke overrides: tiny models, a 2-second clip of small frames, short runs
SMOKE: dict[str, Any] = {
    "device": "cpu", "dtype": "float32", "clip_s": 2.0, "height": 56, "width": 112,
    "tokens": [32, 64], "warmup": 0, "repeats": 1, "budget_s": 0.0,
}  # fmt: skip


class Run:
    """Options, the results file (rewritten after each cell) and the time budget."""

    def __init__(self, args: argparse.Namespace, meta: dict[str, Any]) -> None:
        self.args = args
        self.cuda = args.device == "cuda"
        self.dtype: torch.dtype = getattr(torch, args.dtype)
        self.data: dict[str, Any] = {"meta": meta, "records": []}
        self.start = time.perf_counter()
        args.out.parent.mkdir(parents=True, exist_ok=True)

    def over_budget(self) -> bool:
        budget = float(self.args.budget_s)
        return budget > 0 and time.perf_counter() - self.start > budget

    def save(self) -> None:
        self.data["meta"]["elapsed_s"] = round(time.perf_counter() - self.start, 1)
        tmp = self.args.out.with_name(f"{self.args.out.name}.{time.time_ns()}.tmp")
        tmp.write_text(json.dumps(self.data, indent=1) + "\n", encoding="utf-8")
        tmp.replace(self.args.out)


def attach(model: Any, method: str) -> Any:
    """The context ``method`` runs in: nothing, or halfv's default schedule (per frame)."""
    if method == "unpruned":
        return nullcontext()
    base = halfv.get_adapter_for(model).default_config(model)
    budget = "per_frame" if method == "halfv-frame" else "per_video"
    return halfv.apply(model, base.model_copy(update={"video_budget": budget}))


def _kept(model: Any, method: str, inputs: dict[str, Any]) -> dict[str, Any]:
    """The KV bytes, peak bytes and kept visual tokens of one prefill under ``method``."""
    cuda = next(model.parameters()).is_cuda
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    with attach(model, method) as handle, torch.inference_mode():
        out = model(**inputs, use_cache=True, logits_to_keep=1)
        stats = handle.stats if handle is not None else None
    info: dict[str, Any] = {"kv_bytes": bc.cache_bytes(cache_from_output(out))}
    if cuda:
        info["peak_bytes"] = torch.cuda.max_memory_allocated() - base
    if stats is not None:
        info["kept_visual"] = stats.kept_visual_per_layer()
        info["groups"] = [[g.kind, g.size, g.ivr_keep, g.ssr_keep] for g in stats.budget_groups]
    del out
    return info


def cell(
    run: Run, bench: str, key: str, model: Any, prompt: dict[str, Any], *, methods: Sequence[str]
) -> None:
    """Every metric of one (model, prompt), each method in turn (order reversed every
    other round); records medians, memory and what halfv kept."""
    row = {"bench": bench, "model": key, "visual": prompt["visual"],
           "prompt": int(prompt["full"]["input_ids"].shape[1])} | prompt.get("row", {})  # fmt: skip
    calls: dict[str, Callable[[], Any]] = {
        "prefill_ms": lambda: model(**prompt["lm"], use_cache=True, logits_to_keep=1),
        "ttft_ms": lambda: model.generate(**prompt["full"], max_new_tokens=1, do_sample=False),
    }
    failed: dict[str, str] = {}
    samples: dict[tuple[str, str], list[float]] = {(m, k): [] for m in methods for k in calls}
    for r in range(run.args.warmup + run.args.repeats):
        for method in methods if r % 2 == 0 else methods[::-1]:
            if method in failed:
                continue
            try:
                with attach(model, method), torch.inference_mode():
                    for metric, fn in calls.items():
                        ms = bc.time_ms(fn, 0, 1, run.cuda)[0]
                        if r >= run.args.warmup:
                            samples[method, metric].append(ms)
            except Exception as exc:  # noqa: BLE001 -- record it, go on with the others
                bc.emit(traceback.format_exc(limit=-2))
                failed[method] = f"error: {type(exc).__name__}: {exc}"[:300]
    for method in methods:
        if method in failed:
            run.data["records"].append({**row, "method": method, "status": failed[method]})
            continue
        rec = {**row, "method": method, **_kept(model, method, prompt["lm"])}
        for metric in calls:
            rec[metric] = statistics.median(samples[method, metric])
            rec[metric.replace("_ms", "_samples")] = samples[method, metric]
        run.data["records"].append(rec)
        kv = rec["kv_bytes"] / 2**20
        bc.emit(f"{bench} {key} N={row['visual']} {method:<12} prefill {rec['prefill_ms']:8.1f} "
                f"ms  TTFT {rec['ttft_ms']:8.1f} ms  KV {kv:8.1f} MiB")  # fmt: skip
    run.save()
    if run.cuda:
        torch.cuda.empty_cache()


def run_all(run: Run) -> None:
    """Each model once: its video cell (``--video``), then its backbone cells."""
    args = run.args
    keys = [*(VIDEO_MODELS if args.video else ()), *(BACKBONE_MODELS if args.backbones else ())]
    for key in dict.fromkeys(keys):
        if run.over_budget():
            run.data["records"].append({"model": key, "status": "skipped (budget)"})
            continue
        kind = vm.MODEL_KIND[key]
        tick = time.perf_counter()
        model = vm.build(vm.model_config(kind, tiny=args.cpu_smoke), args.device, run.dtype)
        weights = sum(p.nbytes for p in model.parameters())
        run.data["meta"]["models"][key] = {"weights_bytes": weights}
        bc.emit(f"{key}: built in {time.perf_counter() - tick:.1f} s, {weights / 2**30:.2f} GiB")
        if args.video and key in VIDEO_MODELS:
            rule = vm.video_rule(kind, tiny=args.cpu_smoke, qwen3_size=args.qwen3_video_size)
            frames = round(args.clip_s * args.fps)
            grid = rule.grid(frames, args.height, args.width)
            prompt = vm.video_prompt(model, rule, grid, args.text_tokens)
            prompt["row"] = {"frames": frames, "video_grid_thw": list(grid),
                             "tokens_per_frame": prompt["per_frame"]}  # fmt: skip
            cell(run, "video", key, model, prompt, methods=("unpruned", "halfv", "halfv-frame"))
        if args.backbones and key in BACKBONE_MODELS:
            for n in args.tokens:
                if not run.over_budget():
                    prompt = vm.image_prompt(model, n, args.text_tokens)
                    cell(run, "backbones", key, model, prompt, methods=("unpruned", "halfv"))
        del model
        gc.collect()
        if run.cuda:
            torch.cuda.empty_cache()


# ----------------------------------------------------------------------------- report
def markdown(data: dict[str, Any], bench: str) -> str:
    """The ``video`` or ``backbones`` table: per model and token count, each method's
    prefill, TTFT and KV cache, and halfv's speed-ups."""
    recs = [r for r in data["records"] if r.get("bench") == bench]
    meta = data["meta"]
    head = ["model", "visual tokens", "method", "prefill ms", "x", "TTFT ms", "x", "KV MiB"]
    out = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    base = {
        (r["model"], r["visual"]): r for r in recs if r["method"] == "unpruned" and "ttft_ms" in r
    }
    for r in recs:
        if "ttft_ms" not in r:
            status = ": ".join(r["status"].split(": ")[:2])  # the error class; JSON has all
            out.append(f"| {r['model']} | {r['visual']} | {r['method']} | {status} | | | | |")
            continue
        b = base.get((r["model"], r["visual"]))
        px = f"{b['prefill_ms'] / r['prefill_ms']:.2f}x" if b else "-"
        tx = f"{b['ttft_ms'] / r['ttft_ms']:.2f}x" if b else "-"
        out.append(f"| {r['model']} | {r['visual']} | {r['method']} | {r['prefill_ms']:.1f} | "
                   f"{px} | {r['ttft_ms']:.1f} | {tx} | {r['kv_bytes'] / 2**20:.1f} |")  # fmt: skip
    clip = ""
    if bench == "video":
        grids = {r["model"]: r.get("video_grid_thw") for r in recs}
        clip = (f"{meta['clip_s']:g} s clip at {meta['fps']:g} fps, {meta['height']}x"
                f"{meta['width']} frames; video_grid_thw {grids}; ")  # fmt: skip
    out.append("")
    out.append(
        f"{meta['device_name']}; torch {meta['torch']}, transformers {meta['transformers']}, "
        f"{meta['dtype']}, SDPA, random weights, {meta['text_tokens']} text tokens; {clip}"
        f"median of {meta['repeats']} after {meta['warmup']} warm-up round(s), methods in "
        f"turn; x = speed-up over unpruned; KV = the cache one prefill leaves; {meta['date']}."
    )
    return "\n".join(out) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options (``--cpu-smoke`` overrides the GPU defaults)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = p.add_argument
    add("--video", action="store_true", help="the 10-second clip on Qwen2.5-VL and Qwen3-VL")
    add("--backbones", action="store_true", help="Qwen3-VL-8B and Gemma-3-12B at --tokens")
    add("--clip-s", type=float, default=10.0)
    add("--fps", type=float, default=2.0)
    add("--height", type=int, default=720)
    add("--width", type=int, default=1280)
    add("--qwen3-video-size", type=int, nargs=2, metavar=("SHORTEST", "LONGEST"),
        help="Qwen3-VL video processor size (default 4096 25165824)")  # fmt: skip
    add("--tokens", type=int, nargs="+", default=[1024, 4096])
    add("--text-tokens", type=int, default=60)
    add("--warmup", type=int, default=1)
    add("--repeats", type=int, default=3)
    add("--budget-s", type=float, default=270.0, help="skip models that start after this")
    add("--device", default="cuda")
    add("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    add("--out", type=Path, help="JSON results (benchmarks/results/video.json)")
    add("--from-json", type=Path, help="do not run: report this results file")
    add("--write-docs", action="store_true", help="fill the blocks of docs/video.md, speed.md")
    add("--docs-dir", type=Path, default=Path("docs"))
    add("--cpu-smoke", action="store_true", help="tiny models on the CPU (seconds)")
    args = p.parse_args(argv)
    if args.cpu_smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)
    smoke = Path(tempfile.gettempdir()) / "halfv-video-smoke.json"
    args.out = args.out or (smoke if args.cpu_smoke else Path("benchmarks/results/video.json"))
    if args.from_json is None and not (args.video or args.backbones):
        p.error("pick --video and/or --backbones (or --from-json)")
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
        meta |= {
            "device_name": torch.cuda.get_device_name() if args.device == "cuda"
            else platform.processor() or platform.machine(),
            "torch": torch.__version__, "transformers": transformers.__version__,
            "halfv": halfv.__version__, "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "models": {},
        }  # fmt: skip
        run = Run(args, meta)
        run_all(run)
        run.save()
        data, source = run.data, args.out
    else:
        data, source = json.loads(args.from_json.read_text(encoding="utf-8")), args.from_json
    for bench, (doc, start, end) in (("video", VIDEO_DOCS), ("backbones", BACKBONE_DOCS)):
        if not any(r.get("bench") == bench for r in data["records"]):
            continue
        table = markdown(data, bench)
        bc.emit(table)
        if args.write_docs:
            docs = args.docs_dir / Path(doc).name
            fill_docs_block(
                table, docs, source, script="benchmarks/bench_video.py", start=start, end=end
            )
            bc.emit(f"wrote the {bench} table into {docs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
