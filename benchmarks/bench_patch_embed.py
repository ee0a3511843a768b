"""Qwen2.5-VL patch embedding: stock Conv3d against ``halfv_lab.zoo.use_linear_patch_embed``.

The patch embedding is a Conv3d whose stride equals its kernel, i.e. one matrix product
(see :mod:`halfv_lab.zoo.patch_embed`). This times forward, and forward + backward, of both
forms on the shapes that matter here, CUDA events, median of ``--repeats`` after warm-up:

* ``zoo-train``: the zoo's tower (embed 256) on a training batch of 64 images of 672 px
  (147,456 patches), bf16 autocast, forward + backward;
* ``7b-image``: Qwen2.5-VL-7B's tower (embed 1280) on the patches of 4,096 visual tokens
  (16,384 patches), bf16, forward only (the TTFT path of ``bench_speed``).

    python benchmarks/bench_patch_embed.py [--device cuda] [--out results.json]

On the CPU it runs too (small repeats; slow). Prints one line per case and writes JSON.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionPatchEmbed

from halfv_lab.zoo.patch_embed import use_linear_patch_embed

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for the sibling bench_cpu
import bench_cpu as bc

CASES = {  # name: (embed dim, patches, backward, dtype of the module)
    "zoo-train": (256, 147_456, True, torch.float32),
    "7b-image": (1280, 16_384, False, torch.bfloat16),
}


def _time(fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int) -> float:
    """Median milliseconds (CUDA events on a GPU): ``bench_cpu.time_ms``."""
    return statistics.median(bc.time_ms(fn, warmup, repeats, device.type == "cuda"))


def run_case(
    name: str, device: torch.device, warmup: int, repeats: int, scale: float = 1.0
) -> dict[str, Any]:
    """Time the Conv3d and the GEMM form of one case; ``scale`` shrinks the patch count."""
    dim, patches, backward, dtype = CASES[name]
    patches = max(1, int(patches * scale))
    torch.manual_seed(0)
    conv = Qwen2_5_VisionPatchEmbed(patch_size=14, temporal_patch_size=2, embed_dim=dim)
    conv = conv.to(device, dtype)
    holder = nn.Module()
    holder.patch_embed = copy.deepcopy(conv)
    use_linear_patch_embed(holder)
    x = torch.randn(patches, 3 * 2 * 14 * 14, device=device, dtype=dtype)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=backward)

    def step(module: nn.Module) -> Callable[[], None]:
        def go() -> None:
            with autocast:
                out = module(x)
            if backward:
                out.float().square().mean().backward()
                module.zero_grad(set_to_none=True)

        return go

    conv_ms = _time(step(conv), device, warmup, repeats)
    linear_ms = _time(step(holder.patch_embed), device, warmup, repeats)
    return {
        "case": name,
        "embed_dim": dim,
        "patches": patches,
        "backward": backward,
        "conv3d_ms": round(conv_ms, 3),
        "linear_ms": round(linear_ms, 3),
        "speedup": round(conv_ms / linear_ms, 2),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of the patches (smoke runs)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    rows = [run_case(c, device, args.warmup, args.repeats, args.scale) for c in args.cases]
    for r in rows:
        sys.stdout.write(
            f"{r['case']}: {r['patches']} patches, embed {r['embed_dim']}, "
            f"{'fwd+bwd' if r['backward'] else 'fwd'}: Conv3d {r['conv3d_ms']} ms, "
            f"GEMM {r['linear_ms']} ms ({r['speedup']}x)\n"
        )
    if args.out:
        meta = {
            "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
            "torch": torch.__version__,
            "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
        }
        args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
