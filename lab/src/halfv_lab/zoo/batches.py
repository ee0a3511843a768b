"""Where training batches come from: a stream rendered on the fly, or a bank held in memory.

Both draw from the same distribution, a dataset chosen uniformly and then one of its
training items uniformly, and both are seeded (the stream fixes draw ``k`` by
``(seed, k)``, the bank its sequence of draws by ``seed``).

* :class:`ItemStream` (the default) renders every batch in ``DataLoader`` workers and runs
  the processor on PIL images. On the GPU machine the trainer logged 0.14 s of each
  0.23 s probe-only step at batch 128 as batch preparation.
* :class:`ItemBank` renders every training item once, up front, keeps the images on the
  training device as ``uint8`` tensors (grouped by size, each distinct image once) and
  the questions as strings, and builds each batch by indexing there: no PIL, no worker
  round trips, no host-to-device copy of pixels. Both training splits take 7.6 GB (the
  50,000 synthetic 224 x 224 scenes).

Every batch also carries each image's per-image labels
(:func:`halfv_lab.data.image_labels.label_row`) as ``targets``, for the label heads.
With ``vision_only`` a source returns just what the vision tower reads (``pixel_values``
and, for Qwen2.5-VL, ``image_grid_thw``): the prompts a probe-only run would never use
are not built.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from halfv_lab.data import VQAItem, load_split
from halfv_lab.data.image_labels import label_row
from halfv_lab.zoo.label_heads import label_targets
from halfv_lab.zoo.processing import VQAProcessor

__all__ = ["Batch", "ItemBank", "ItemStream"]

log = logging.getLogger(__name__)


@dataclass
class Batch:
    """One training batch: the texts, the model inputs built from them, the image labels.

    ``targets`` is ``[B, heads]``: each image's class per head of
    :data:`halfv_lab.data.image_labels.LABEL_HEADS` (``UNKNOWN`` where none applies).
    """

    questions: list[str]
    answers: list[str]
    inputs: dict[str, torch.Tensor]
    targets: torch.Tensor

    def __len__(self) -> int:
        return len(self.questions)


class _Mixture(Dataset[VQAItem]):
    """Item ``k`` = a uniformly chosen dataset and item, fixed by ``(seed, k)``."""

    def __init__(self, datasets: Sequence[str], seed: int) -> None:
        self.splits = [load_split(name, "train") for name in datasets]
        self.seed = seed

    def __len__(self) -> int:
        return 1 << 30

    def __getitem__(self, k: int) -> VQAItem:
        rng = np.random.default_rng([self.seed, k])
        split = self.splits[int(rng.integers(len(self.splits)))]
        return split[int(rng.integers(len(split)))]


def _as_list(batch: list[VQAItem]) -> list[VQAItem]:
    return batch


def _batch(
    proc: VQAProcessor,
    questions: list[str],
    answers: list[str],
    pixels: torch.Tensor,
    targets: torch.Tensor,
    *,
    vision_only: bool,
) -> Batch:
    """A batch from its texts, preprocessed pixels and image labels (prompts unless vision only)."""
    inputs = proc.vision_inputs(pixels, len(questions))
    if not vision_only:
        inputs |= proc.encode_text(questions, answers, pixels.device)
    return Batch(questions, answers, inputs, targets)


class ItemStream:
    """Batches rendered by ``DataLoader`` workers and preprocessed from PIL images."""

    def __init__(
        self,
        datasets: Sequence[str],
        proc: VQAProcessor,
        *,
        batch_size: int,
        seed: int,
        device: torch.device,
        num_workers: int = 0,
        vision_only: bool = False,
    ) -> None:
        self.proc, self.device, self.vision_only = proc, device, vision_only
        loader = DataLoader(
            _Mixture(datasets, seed),
            batch_size=batch_size,
            num_workers=num_workers,
            collate_fn=_as_list,
        )
        self._items: Iterator[list[VQAItem]] = iter(loader)

    def next(self) -> Batch:
        """The next batch, on the device."""
        items = next(self._items)
        pixels = self.proc.preprocess_images([it.image for it in items], self.device)
        questions = [it.question for it in items]
        answers = [it.answer for it in items]
        targets = label_targets([label_row(it) for it in items], self.device)
        return _batch(self.proc, questions, answers, pixels, targets, vision_only=self.vision_only)


_Row = tuple[int, str, np.ndarray, str, str, list[int]]


class _Rendered(Dataset[_Row]):
    """Every item of the training splits: ``(dataset, image key, pixels, q, a, labels)``.

    Items that share an image file (``meta["path"]``, as easy-VQA's questions do) share a
    key, so the bank stores that image once.
    """

    def __init__(self, datasets: Sequence[str], limit: int | None) -> None:
        self.splits = [load_split(name, "train", limit=limit) for name in datasets]
        self.index = [(d, i) for d, split in enumerate(self.splits) for i in range(len(split))]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, k: int) -> _Row:
        d, i = self.index[k]
        item = self.splits[d][i]
        key = str(item.meta.get("path", f"{d}:{i}"))
        pixels = np.asarray(item.image.convert("RGB"), dtype=np.uint8)
        return d, key, pixels, item.question, item.answer, label_row(item)


class ItemBank:
    """All training items rendered once; batches are built by indexing.

    Args:
        datasets: dataset names (``halfv_lab.data.load_split``), mixed uniformly.
        proc: the family's processor.
        batch_size: items per batch.
        seed: fixes the draw order.
        device: where the images are kept and batches go.
        limit: keep only the first ``limit`` items of each split (tests; default all).
        num_workers: ``DataLoader`` workers that render the items.
        vision_only: return only the vision tower's inputs.
    """

    def __init__(
        self,
        datasets: Sequence[str],
        proc: VQAProcessor,
        *,
        batch_size: int,
        seed: int,
        device: torch.device,
        limit: int | None = None,
        num_workers: int = 0,
        vision_only: bool = False,
    ) -> None:
        self.proc, self.device, self.vision_only = proc, device, vision_only
        self.batch_size = batch_size
        self._rng = np.random.default_rng([seed, 1])
        self._build(datasets, limit, num_workers)

    def _build(self, datasets: Sequence[str], limit: int | None, num_workers: int) -> None:
        rendered = _Rendered(datasets, limit)
        loader = DataLoader(rendered, batch_size=256, num_workers=num_workers, collate_fn=list)
        keys: dict[str, int] = {}  # image identity -> image number
        images: list[np.ndarray] = []
        image_of: list[int] = []
        dataset_of: list[int] = []
        self.questions: list[str] = []
        self.answers: list[str] = []
        labels: list[list[int]] = []
        for chunk in loader:  # in item order: the loader does not shuffle
            for d, key, pixels, q, a, row in chunk:
                if key not in keys:
                    keys[key] = len(images)
                    images.append(pixels)
                image_of.append(keys[key])
                dataset_of.append(d)
                self.questions.append(q)
                self.answers.append(a)
                labels.append(row)
        self.targets = label_targets(labels, self.device)
        self.dataset_of = np.array(dataset_of, dtype=np.int64)
        self._group_images(images, image_of)
        self.datasets = [np.flatnonzero(self.dataset_of == d) for d in range(len(datasets))]
        log.info(
            "item bank: %d items, %d distinct images, %.2f GB",
            len(self.questions),
            len(images),
            sum(g.numel() for g in self.groups) / 1e9,
        )

    def _group_images(self, images: list[np.ndarray], image_of: list[int]) -> None:
        """Stack images by size: ``groups[g][row]``; item ``k``'s is ``(group_of, row_of)[k]``."""
        by_size: dict[tuple[int, ...], list[int]] = {}
        for n, array in enumerate(images):
            by_size.setdefault(array.shape, []).append(n)
        self.groups: list[torch.Tensor] = []
        where = np.empty((len(images), 2), dtype=np.int64)
        for g, members in enumerate(by_size.values()):
            stacked = torch.from_numpy(np.stack([images[n] for n in members]))
            self.groups.append(stacked.permute(0, 3, 1, 2).contiguous().to(self.device))
            where[members, 0] = g
            where[members, 1] = np.arange(len(members))
        self.group_of = where[image_of, 0]
        self.row_of = where[image_of, 1]

    def __len__(self) -> int:
        return len(self.questions)

    def draw(self) -> np.ndarray:
        """Item indexes of the next batch: a dataset uniformly, then one of its items."""
        which = self._rng.integers(len(self.datasets), size=self.batch_size)
        return np.array(
            [self.datasets[d][self._rng.integers(len(self.datasets[d]))] for d in which]
        )

    def take(self, ks: np.ndarray) -> Batch:
        """The batch of items ``ks``, on the device."""
        questions = [self.questions[k] for k in ks]
        answers = [self.answers[k] for k in ks]
        groups = []
        for g in np.unique(self.group_of[ks]):
            pos = np.flatnonzero(self.group_of[ks] == g)
            rows = torch.from_numpy(self.row_of[ks[pos]]).to(self.device)
            groups.append((torch.from_numpy(pos), self.groups[g].index_select(0, rows)))
        pixels = self.proc.preprocess_uint8(groups, len(ks), self.device)
        targets = self.targets.index_select(0, torch.from_numpy(ks).to(self.device))
        return _batch(self.proc, questions, answers, pixels, targets, vision_only=self.vision_only)

    def next(self) -> Batch:
        """The next batch, on the device."""
        return self.take(self.draw())
