"""What each IVR selection keeps of an easy-VQA image, and what that does to the answer.

For the first ``--images`` easy-VQA test images (one shape on a plain background), each
selection rule prunes the trained zoo model once (IVR only, no SSR stage) and the script
prints, averaged over the images:

* ``shape share``: the share of kept visual tokens whose patch shows the shape (a patch
  whose pixels, resized to the token grid, differ from the corner's background colour),
  next to the share of all tokens that do;
* ``KL``: ``KL(unpruned || pruned)`` of the next-token distribution at the last prompt
  position, and ``top-1 agree``: how often the first answer token is unchanged.

It is the measurement behind ``grid_share`` (docs/policies.md, "Grid seeds"): farthest-
point coverage keeps rare content far out of proportion, and the models here pay for it.

    python lab/scripts/selection_mixture.py                       # llava, 24 images, keep 0.25
    python lab/scripts/selection_mixture.py --family internvl --layer 2 --keep 0.11

CPU, float32, about 2 minutes for the defaults on 2 cores. Needs SmolLM2 and easy-vqa
(see docs/models.md).
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import torch

import halfv
from halfv.config import PruningConfig
from halfv_lab.data import load_split
from halfv_lab.zoo import load_smollm2, load_trained

#: rule name -> PruningConfig fields; every rule prunes once, at the same layer and keep
RULES: dict[str, dict[str, Any]] = {
    "halfv": {},
    "halfv grid 0.5": {"ivr_policy_options": {"grid_share": 0.5}},
    "halfv grid 0.7": {"ivr_policy_options": {"grid_share": 0.7}},
    "attention": {"ivr_policy": "attention"},
    "diversity": {"ivr_policy": "diversity"},
    "random": {"ivr_policy": "random"},
    "uniform": {"ivr_policy": "uniform"},
}


def shape_mask(image: Any, grid: int) -> np.ndarray[Any, np.dtype[np.bool_]]:
    """Per token (raster order): does the patch differ from the background colour?"""
    pixels = np.asarray(image.convert("RGB").resize((grid, grid), 0)).astype(float)
    background = pixels[0, 0]
    return np.asarray(np.abs(pixels - background).sum(-1) > 30).reshape(-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--family", default="llava", help="zoo family (llava)")
    parser.add_argument("--checkpoint", help="checkpoint folder (default: the shipped one)")
    parser.add_argument("--images", type=int, default=24, help="easy-VQA test images (24)")
    parser.add_argument("--keep", type=float, default=0.25, help="IVR keep ratio (0.25)")
    parser.add_argument("--layer", type=int, default=3, help="IVR layer (3)")
    parser.add_argument("--attention-share", type=float, default=0.2, help="anchors (0.2)")
    args = parser.parse_args()

    torch.manual_seed(0)
    lm, tokenizer = load_smollm2(torch.float32)
    model, processor = load_trained(args.family, args.checkpoint, lm=lm, tokenizer=tokenizer)
    grid = round(processor.num_visual_tokens**0.5)
    if grid * grid != processor.num_visual_tokens:
        parser.error(f"{args.family}: {processor.num_visual_tokens} tokens are not a square grid")
    sums = {name: np.zeros(4) for name in RULES}
    items = load_split("easyvqa", "test", args.images)
    for item in items:
        on_shape = shape_mask(item.image, grid)
        batch = processor([item.image], [item.question])
        with torch.no_grad():
            reference = model(**batch).logits[0, -1].log_softmax(-1)
        for name, fields in RULES.items():
            config = PruningConfig(
                **{
                    "ivr_layer": args.layer,
                    "ivr_keep": args.keep,
                    "attention_share": args.attention_share,
                    "ssr_mode": "none",
                    "ssr_layer": None,
                    **fields,
                }
            )
            with halfv.apply(model, config) as handle, torch.no_grad():
                pruned = model(**batch).logits[0, -1].log_softmax(-1)
                stats = handle.stats
            assert stats is not None
            kept = np.array(stats.kept_positions[args.layer][0])
            start, length = stats.spans[0][0]
            visual = kept[(kept >= start) & (kept < start + length)] - start
            kl = float((reference.exp() * (reference - pruned)).sum())
            agree = float(pruned.argmax() == reference.argmax())
            sums[name] += (on_shape.mean(), on_shape[visual].mean(), kl, agree)
    print(
        f"{args.family}: {len(items)} easy-VQA test images, IVR at layer {args.layer}, "
        f"keep {args.keep}, attention share {args.attention_share}, no SSR stage\n"
    )
    print("| rule | shape share (all tokens) | shape share (kept) | KL | top-1 agree |")
    print("|---|---|---|---|---|")
    for name, total in sums.items():
        mean = total / len(items)
        print(f"| {name} | {mean[0]:.3f} | {mean[1]:.3f} | {mean[2]:.4f} | {mean[3]:.2f} |")


if __name__ == "__main__":
    main()
