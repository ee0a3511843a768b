"""The VQA item type and a lazy, indexable dataset built on it."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

from PIL import Image

__all__ = ["LazyVQA", "VQAItem"]


@dataclass(frozen=True)
class VQAItem:
    """One visual question with its single-word answer.

    Attributes:
        image: the RGB image.
        question: the question text.
        answer: the reference answer (one word or number).
        task: what the question tests (``"easyvqa"``, ``"count"``, ``"position"``,
            ``"color"`` or ``"glyph"``).
        meta: generator details (drawn shapes, glyph, ...) for checks; may be empty.
    """

    image: Image.Image
    question: str
    answer: str
    task: str
    meta: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


class LazyVQA(Sequence[VQAItem]):
    """A read-only sequence that makes item ``i`` on access with ``make(i)``.

    Items are never cached, so a 50,000-item split costs no memory until read.

    Args:
        length: number of items.
        make: builds the item at an index in ``range(length)``.
        name: shown in ``repr``.
    """

    def __init__(self, length: int, make: Callable[[int], VQAItem], name: str) -> None:
        if length < 0:
            msg = f"length must be >= 0, got {length}"
            raise ValueError(msg)
        self._length = length
        self._make = make
        self.name = name

    def __len__(self) -> int:
        return self._length

    @overload
    def __getitem__(self, index: int) -> VQAItem: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[VQAItem]: ...

    def __getitem__(self, index: int | slice) -> VQAItem | Sequence[VQAItem]:
        if isinstance(index, slice):
            return [self._make(i) for i in range(*index.indices(self._length))]
        if not -self._length <= index < self._length:
            msg = f"index {index} out of range for {self.name} ({self._length} items)"
            raise IndexError(msg)
        return self._make(index % self._length)

    def __iter__(self) -> Iterator[VQAItem]:
        return (self._make(i) for i in range(self._length))

    def __repr__(self) -> str:
        return f"LazyVQA({self.name!r}, {self._length} items)"
