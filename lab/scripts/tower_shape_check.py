"""Can the zoo's small vision tower learn easy-VQA's shapes on its own? (a diagnostic)

Trains a fresh CLIP tower of the zoo's LLaVA size (hidden 256, 4 layers, 4 heads, MLP
1024, patch 14) with a mean-pool + linear head to name the shape (circle, rectangle,
triangle) of each easy-VQA image, one label per image (3,107 train and 763 test images),
for a fixed wall-clock time, and prints the test accuracy every 100 steps. It answers
whether the zoo's weak shape answers come from the tower or from how the zoo trains it
(see docs/models.md). All images live on the device; the run is seeded.

    python lab/scripts/tower_shape_check.py --size 336 --seconds 170 --batch-size 128
    python lab/scripts/tower_shape_check.py --size 336 --seconds 150 --recipe zoo
    python lab/scripts/tower_shape_check.py --size 336 --seconds 150 --projector

``--recipe zoo`` uses the zoo trainer's optimiser settings (weight decay 0.01, gradient
norm clipped at 1.0, 100 warm-up steps, cosine over the time limit) instead of a constant
learning rate; ``--projector`` puts LLaVA's 2-layer projector (256 -> 576 -> 576)
between tower and head. Needs ``easy-vqa`` (``pip install --no-deps easy-vqa``).
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel

from halfv_lab.data.easyvqa import EASYVQA_ANSWERS, image_shapes
from halfv_lab.zoo.families import VisionSize

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def shape_set(split: str, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images and shape labels of ``split``, one row per image that has a shape answer."""
    shapes = image_shapes(split)
    paths = sorted(shapes)
    pixels = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()
    labels = [EASYVQA_ANSWERS.index(shapes[p]) for p in paths]
    return images.to(device), torch.tensor(labels, device=device)


def build(size: int, with_projector: bool, device: str) -> tuple[nn.Module, nn.Module, nn.Module]:
    """The tower, the projector (or identity) and the head, initialised in this order."""
    zoo = VisionSize()  # the zoo's LLaVA tower: hidden 256, 4 layers, 4 heads, MLP 1024
    config = CLIPVisionConfig(
        hidden_size=zoo.hidden_size,
        intermediate_size=zoo.intermediate_size,
        num_hidden_layers=zoo.num_layers,
        num_attention_heads=zoo.num_heads,
        image_size=size,
        patch_size=14,
    )
    tower: nn.Module = CLIPVisionModel(config)
    tower.to(device)
    projector: nn.Module = nn.Identity()
    lm_width = 576  # SmolLM2-135M's hidden size, the width LLaVA's projector maps to
    if with_projector:
        projector = nn.Sequential(
            nn.Linear(zoo.hidden_size, lm_width), nn.GELU(), nn.Linear(lm_width, lm_width)
        ).to(device)
    width = lm_width if with_projector else zoo.hidden_size
    head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 3)).to(device)
    return tower, projector, head


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--size", type=int, default=336, help="input side in px (336 = the zoo's)")
    p.add_argument("--seconds", type=float, default=170.0, help="training time")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--recipe", choices=("plain", "zoo"), default="plain")
    p.add_argument("--projector", action="store_true")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    torch.manual_seed(0)
    dev, zoo = args.device, args.recipe == "zoo"
    train_x, train_y = shape_set("train", dev)
    test_x, test_y = shape_set("test", dev)
    mean = torch.tensor(CLIP_MEAN, device=dev).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=dev).view(1, 3, 1, 1)
    tower, projector, head = build(args.size, args.projector, dev)
    params = [*tower.parameters(), *head.parameters(), *projector.parameters()]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01 if zoo else 0.0)

    def logits(x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x.float() / 255, size=(args.size, args.size), mode="bicubic")
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=x.is_cuda):
            h = projector(tower(pixel_values=(x - mean) / std).last_hidden_state[:, 1:])
        out: torch.Tensor = head(h.float().mean(1))
        return out

    label = f"[{args.recipe}{' +projector' if args.projector else ''} {args.size}px lr {args.lr}"
    label += f" bs {args.batch_size}]"
    start, step = time.time(), 0
    while time.time() - start < args.seconds:
        step += 1
        idx = torch.randint(0, len(train_y), (args.batch_size,), device=dev)
        loss = F.cross_entropy(logits(train_x[idx]), train_y[idx])
        if zoo:
            progress = min(1.0, (time.time() - start) / args.seconds)
            factor = min(1.0, step / 100) * 0.5 * (1 + math.cos(math.pi * progress))
            for group in opt.param_groups:
                group["lr"] = args.lr * factor
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        if zoo:
            torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % 100 == 0:
            tower.eval()
            with torch.no_grad():
                acc = (logits(test_x).argmax(-1) == test_y).float().mean().item()
            tower.train()
            samples = step * args.batch_size
            line = f"{label} step {step} samples {samples} loss {loss.item():.3f}"
            sys.stdout.write(f"{line} test-acc {acc:.3f}\n")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
