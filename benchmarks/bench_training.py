"""CPU timing of one fine-tuning step (forward with labels + backward + AdamW) under halfv.

A LLaVA-shaped model with small random weights (CLIP-style tower of 2 layers, 8 text layers
of width 256, 576 visual tokens per image, 48 text tokens) runs training steps with and
without halfv, the two methods in turn (step i of each, then step i+1), so drift of the
machine hits both alike. Labels cover the text tokens (visual rows are -100, as in LLaVA
training); under halfv the rows it drops leave the labels too, and gradients still reach
the tower and the projector through the kept visual tokens.

    python benchmarks/bench_training.py [--steps 12] [--batch 2] [--out FILE.json]

Writes a JSON record (median seconds per step, ratio, schedule, machine) and prints a
table.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

import halfv

SCHEDULES = {
    "halfv-ivr25": halfv.PruningConfig(ivr_layer=2, ivr_keep=0.25, ssr_layer=None),
    "halfv-ivr25-freeze6": halfv.PruningConfig(
        ivr_layer=2, ivr_keep=0.25, ssr_layer=6, ssr_mode="freeze"
    ),
}


def build(seed: int = 0) -> tuple[torch.nn.Module, int]:
    """The LLaVA-shaped model and its visual tokens per image."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig
    from transformers import LlavaForConditionalGeneration as Llava

    torch.manual_seed(seed)
    cfg = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=128,
            intermediate_size=256,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=336,
            patch_size=14,
        ),
        text_config=LlamaConfig(
            hidden_size=256,
            intermediate_size=1024,
            num_hidden_layers=8,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=2000,
        ),
        image_token_id=1999,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    )
    model = Llava(cfg)
    model.set_attn_implementation("sdpa")
    return model.train(), (336 // 14) ** 2


def batch(batch_size: int, visual: int, text: int = 48, seed: int = 0) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(10, 1900, (batch_size, text + visual), generator=gen)
    ids[:, 8 : 8 + visual] = 1999
    labels = ids.masked_fill(ids == 1999, -100)
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "pixel_values": torch.randn(batch_size, 3, 336, 336, generator=gen),
        "labels": labels,
    }


def step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, inputs: dict[str, Any]) -> float:
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    loss = model(**inputs).loss
    loss.backward()
    optimizer.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12, help="timed steps per method")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per method")
    parser.add_argument("--batch", type=int, default=2, help="samples per step")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON record here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, visual = build()
    inputs = batch(args.batch, visual)
    # one optimizer per method over the same parameters: state is what AdamW keeps,
    # and both see the same kind of update each step
    methods: dict[str, Any] = {"none": None, **SCHEDULES}
    optimizers = {name: torch.optim.AdamW(model.parameters(), lr=1e-5) for name in methods}
    times: dict[str, list[float]] = {name: [] for name in methods}
    for i in range(args.warmup + args.steps):
        for name, config in methods.items():
            if config is None:
                seconds = step(model, optimizers[name], inputs)
            else:
                with halfv.apply(model, config):
                    seconds = step(model, optimizers[name], inputs)
            if i >= args.warmup:
                times[name].append(seconds)
    base = statistics.median(times["none"])
    rows = {
        name: {"median_s": statistics.median(t), "speedup": base / statistics.median(t)}
        for name, t in times.items()
    }
    record = {
        "benchmark": "training-step",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": platform.processor()},
        "torch": torch.__version__,
        "threads": args.threads,
        "batch": args.batch,
        "visual_tokens": visual,
        "text_tokens": 48,
        "steps": args.steps,
        "schedules": {k: v.model_dump(exclude_defaults=True) for k, v in SCHEDULES.items()},
        "results": rows,
    }
    sys.stdout.write("| method | median s/step | speed-up |\n|---|---|---|\n")
    for name, row in rows.items():
        sys.stdout.write(f"| {name} | {row['median_s']:.3f} | {row['speedup']:.2f}x |\n")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
