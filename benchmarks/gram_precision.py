"""Would a 16-bit Gram matrix change HalfV's FPS picks? Measured on the trained zoo (CPU).

A float16 Gram matrix would halve the bytes of each row the FPS loop reads (and keep the
matrix of 4096 tokens in an H100's L2 cache), so the question is whether rounding the
cosine similarities to float16 changes the picks. For each zoo family and a few test
items this takes the IVR features halfv uses (hidden states entering layer 2, through
the final norm, rounded to bf16 as on a GPU), runs seeded FPS on the float32 Gram matrix
and on the same matrix rounded to float16 (both with the torch reference loop), and
prints how much of the kept set is shared, the first pick where the two differ, and the
k-center radius (largest distance from a token to the kept set, float64) of each.

    python benchmarks/gram_precision.py --families llava qwen2_5_vl internvl --items 6
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch

from halfv.ops.fps_kernel import greedy_on_gram_torch
from halfv_lab.data import load_split
from halfv_lab.zoo import FAMILIES, load_trained


def _picks(gram: torch.Tensor, k: int, seeds: torch.Tensor) -> torch.Tensor:
    n = gram.shape[0]
    dist = (1.0 - gram[seeds].amax(0)).scatter(0, seeds, float("-inf"))[None]
    out = torch.empty((1, k), dtype=torch.long)
    out[0, : len(seeds)] = seeds
    return greedy_on_gram_torch(gram[None], dist.reshape(1, n), out, len(seeds))[0]


def _radius(unit: torch.Tensor, kept: torch.Tensor) -> float:
    sims = unit.double() @ unit.double()[kept].T
    return float((1.0 - sims.max(dim=1).values).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    parser.add_argument("--items", type=int, default=6, help="test items per dataset")
    parser.add_argument("--keep", type=float, default=0.25)
    parser.add_argument("--share", type=float, default=0.1, help="anchors (random here)")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_grad_enabled(False)
    for family in args.families:
        model, processor = load_trained(family)
        image_token = model.config.image_token_id
        items = [
            item
            for dataset in ("easyvqa", "synthetic")
            for item in load_split(dataset, "test", limit=args.items)
        ]
        shared, first, radius32, radius16 = [], [], [], []
        for item in items:
            batch = processor([item.image], [item.question])
            hidden = model(**batch, output_hidden_states=True).hidden_states[2][0]
            visual = hidden[batch["input_ids"][0] == image_token]
            feats = model.model.language_model.norm(visual).to(torch.bfloat16).float()
            unit = torch.nn.functional.normalize(feats, dim=-1)
            gram = unit @ unit.T
            n = unit.shape[0]
            k = int(n * args.keep)
            seeds = torch.randperm(n)[: int(k * args.share)]
            p32 = _picks(gram, k, seeds)
            p16 = _picks(gram.half().float(), k, seeds)
            shared.append(len(set(p32.tolist()) & set(p16.tolist())) / k)
            differ = (p32 != p16).nonzero()
            first.append(int(differ[0]) if len(differ) else k)
            radius32.append(_radius(unit, p32))
            radius16.append(_radius(unit, p16))
        sys.stdout.write(
            f"{family}: {len(items)} items, keep {k} of {n}; kept set shared "
            f"{statistics.mean(shared):.2f} (min {min(shared):.2f}); first differing pick "
            f"{min(first)}-{max(first)}; k-center radius float32 "
            f"{statistics.median(radius32):.1e}, float16 {statistics.median(radius16):.1e}\n"
        )


if __name__ == "__main__":
    main()
