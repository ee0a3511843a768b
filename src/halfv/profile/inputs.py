"""User inputs of ``halfv profile`` and ``halfv demo``: image files and prompts.

Everything is checked before any model is built, and every problem is one ``ValueError``
or ``FileNotFoundError`` line naming the bad value and the fix.

Prompts come in two forms (:class:`Prompt`):

* ``--prompt TEXT`` -- a plain question. The model's chat template is added and the image
  goes where the template puts it (before the question). ``TEXT`` may contain one
  ``<image>`` placeholder to put the image somewhere else inside the user turn.
* ``--raw-prompt TEXT`` -- a complete prompt used as is (no chat template). It must contain
  exactly one ``<image>`` placeholder, which is replaced by the model's image tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from halfv.errors import HalfvFileNotFoundError, HalfvValueError

__all__ = ["IMAGE_SUFFIXES", "PLACEHOLDER", "Prompt", "find_images", "load_image", "load_images"]

PLACEHOLDER = "<image>"
"""Where the image goes in a prompt."""
IMAGE_SUFFIXES: tuple[str, ...] = (
    ".png",
    ".jpg",
    ".jpeg",
    ".bmp",
    ".gif",
    ".webp",
    ".tif",
    ".tiff",
)
"""File suffixes (case-insensitive) that ``--image-dir`` picks up."""


@dataclass(frozen=True)
class Prompt:
    """A prompt split at its image placeholder.

    Attributes:
        before: text before the image (empty when the image comes first).
        after: text after the image.
        raw: use the text as the whole prompt, without the model's chat template.
        source: the text as given.
    """

    before: str
    after: str
    raw: bool
    source: str

    @classmethod
    def parse(cls, text: str, *, raw: bool = False, option: str | None = None) -> Prompt:
        """Check ``text`` and split it at its ``<image>`` placeholder.

        Args:
            text: the prompt.
            raw: a complete prompt (no chat template); it needs the placeholder.
            option: how error messages name the text (default ``--prompt`` /
                ``--raw-prompt``).

        Raises:
            ValueError: no text besides the placeholder, more than one placeholder, or a
                raw prompt without one.
        """
        option = option or ("--raw-prompt" if raw else "--prompt")
        count = text.count(PLACEHOLDER)
        if not text.replace(PLACEHOLDER, "").strip():
            msg = f"{option} {text!r} has no text: ask something, e.g. {option} 'What is shown?'"
            raise HalfvValueError(msg)
        if count > 1:
            msg = (
                f"{option} {text!r} has {count} {PLACEHOLDER} placeholders: each input has one "
                f"image, so use one placeholder"
            )
            raise HalfvValueError(msg)
        if raw and count == 0:
            msg = (
                f"{option} {text!r} has no {PLACEHOLDER} placeholder: add {PLACEHOLDER} where "
                "the image goes, or pass the question with --prompt (the chat template then "
                "places the image)"
            )
            raise HalfvValueError(msg)
        if count == 0:
            return cls("", text.strip(), raw, text)
        before, after = text.split(PLACEHOLDER)
        return cls(before, after, raw, text)

    @property
    def has_placeholder(self) -> bool:
        """Whether the user chose the image position."""
        return PLACEHOLDER in self.source


def load_image(path: str | Path) -> Image.Image:
    """Open and fully decode one image as RGB.

    Raises:
        FileNotFoundError: ``path`` does not exist or is not a file.
        ValueError: the file is not a readable image (the message names it and PIL's reason).
    """
    path = Path(path)
    if not path.exists():
        msg = f"image file {str(path)!r} does not exist: check the path"
        raise HalfvFileNotFoundError(msg)
    if not path.is_file():
        msg = (
            f"image path {str(path)!r} is not a file: pass image files, or a folder as --image-dir"
        )
        raise HalfvFileNotFoundError(msg)
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        msg = (
            f"image file {str(path)!r} cannot be read as an image ({reason}): replace or remove it"
        )
        raise HalfvValueError(msg) from exc


def find_images(
    images: Sequence[str | Path] | None = None,
    image_dir: str | Path | None = None,
    limit: int | None = None,
) -> list[Path]:
    """The image files to profile: the given paths, or the images in a folder (sorted).

    Args:
        images: explicit image paths (all must exist).
        image_dir: a folder whose files with an :data:`IMAGE_SUFFIXES` suffix are used.
        limit: keep at most this many (the first ones), ``>= 1``.

    Raises:
        ValueError: neither or both sources, an empty folder, or a bad ``limit``.
        FileNotFoundError: a path or the folder does not exist.
    """
    if limit is not None and limit < 1:
        msg = f"--limit {limit} must be >= 1 (the number of images to profile)"
        raise HalfvValueError(msg)
    if (images is None or len(images) == 0) == (image_dir is None):
        msg = "pass image files with --images PATH [PATH ...] or a folder with --image-dir DIR"
        raise HalfvValueError(msg)
    if image_dir is not None:
        folder = Path(image_dir)
        if not folder.is_dir():
            msg = f"--image-dir {str(folder)!r} is not a folder: check the path"
            raise HalfvFileNotFoundError(msg)
        paths = sorted(
            p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not paths:
            msg = (
                f"--image-dir {str(folder)!r} contains no image files (looked for "
                f"{' '.join(IMAGE_SUFFIXES)}): add images or point at another folder"
            )
            raise HalfvValueError(msg)
    else:
        paths = [Path(p) for p in images or ()]
        for path in paths:
            if not path.is_file():
                what = "is not a file" if path.exists() else "does not exist"
                msg = f"image file {str(path)!r} {what}: check the path"
                raise HalfvFileNotFoundError(msg)
    return paths[:limit] if limit is not None else paths


def load_images(paths: Sequence[Path]) -> list[Image.Image]:
    """Decode every path with :func:`load_image` (fails on the first unreadable one)."""
    return [load_image(path) for path in paths]
