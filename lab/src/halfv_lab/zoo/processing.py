"""Turn (image, question[, answer]) into model inputs for the zoo VLMs.

One small processor serves the three families. It writes the prompt in SmolLM2's chat
style (no system turn)::

    <|im_start|>user\\n{IMAGE BLOCK}\\n{question} Answer with one word.<|im_end|>\\n
    <|im_start|>assistant\\n{answer}<|im_end|>

where the image block is the family's image tokens, already expanded to one id per visual
token (LLaVA: ``<image>`` x 576; InternVL: ``<img>`` ``<IMG_CONTEXT>`` x 576 ``</img>``;
Qwen2.5-VL: ``<|vision_start|>`` ``<|image_pad|>`` x 576 ``<|vision_end|>``). Batches are
left padded, so every prompt ends at the last column (what ``generate`` needs) and, during
training, every answer ends there too.

Images are preprocessed in torch rather than with the transformers image processors: every
image is resized (bicubic) to the family's square input size, scaled to [0, 1] and
normalised; for Qwen2.5-VL the result is cut into flattened 14 x 14 x 2 patches in the
exact order of ``Qwen2VLImageProcessor.patchify`` (tests check this against the PIL
processor). Doing it in torch lets the resize run on the GPU during training, needs no
torchvision, and treats all three families alike. Non-square images are stretched to the
square size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

if TYPE_CHECKING:
    from transformers import BatchFeature, PreTrainedTokenizerBase

__all__ = ["IGNORE_INDEX", "ImageLayout", "VQAProcessor"]

IGNORE_INDEX = -100
"""Label value of positions that carry no loss (prompt, padding)."""

_USER = "<|im_start|>user\n"
_SUFFIX = " Answer with one word.<|im_end|>\n<|im_start|>assistant\n"


@dataclass(frozen=True)
class ImageLayout:
    """How a family wants its pixels.

    Attributes:
        size: side of the square input image in pixels.
        mean: per-channel mean subtracted after scaling to [0, 1].
        std: per-channel standard deviation divided out after the mean.
        qwen_patch: patch size for Qwen2.5-VL's flattened patches; ``None`` keeps the
            ``(batch, 3, size, size)`` layout of CLIP / InternViT.
        merge_size: Qwen2.5-VL's spatial merge size (2 x 2 patches per visual token).
        temporal_patch_size: Qwen2.5-VL's temporal patch size (a still image is repeated).
    """

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    qwen_patch: int | None = None
    merge_size: int = 2
    temporal_patch_size: int = 2

    @property
    def grid(self) -> int:
        """Qwen2.5-VL patches per side (``size // qwen_patch``); 0 for other layouts."""
        return self.size // self.qwen_patch if self.qwen_patch else 0


def _as_list(value: object, kind: type, name: str) -> list[object]:
    if isinstance(value, kind):
        return [value]
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return list(value)
    msg = f"{name} must be a {kind.__name__} or a sequence of them, got {type(value).__name__}"
    raise TypeError(msg)


class VQAProcessor:
    """Builds left-padded batches of prompts with expanded image tokens, plus pixels.

    Args:
        family: the zoo family name (``"llava"``, ``"internvl"`` or ``"qwen2_5_vl"``).
        tokenizer: SmolLM2's tokenizer with the family's image tokens added.
        layout: the image preprocessing of the family.
        image_block: token ids that stand for one image in the prompt, fully expanded.
        image_token_id: the id the model replaces with visual features.
        mm_token_type_ids: also return ``mm_token_type_ids`` and ``image_grid_thw``
            (Qwen2.5-VL needs them for its 3-D rotary positions).
    """

    def __init__(
        self,
        family: str,
        tokenizer: PreTrainedTokenizerBase,
        layout: ImageLayout,
        image_block: Sequence[int],
        image_token_id: int,
        *,
        mm_token_type_ids: bool = False,
    ) -> None:
        self.family = family
        self.tokenizer = tokenizer
        self.layout = layout
        self.image_block = [int(i) for i in image_block]
        self.image_token_id = int(image_token_id)
        self.mm_token_type_ids = mm_token_type_ids
        eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
        if not isinstance(eos, int) or eos == tokenizer.unk_token_id:
            msg = "the tokenizer has no <|im_end|> token; pass SmolLM2's chat tokenizer"
            raise ValueError(msg)
        self.eos_token_id: int = eos
        pad = tokenizer.pad_token_id
        self.pad_token_id: int = int(pad) if pad is not None else eos
        self._user_ids = self._encode(_USER)

    @property
    def num_visual_tokens(self) -> int:
        """Visual tokens per image (the count of ``image_token_id`` in the image block)."""
        return self.image_block.count(self.image_token_id)

    def _encode(self, text: str) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return [int(i) for i in ids]

    def prompt_ids(self, question: str) -> list[int]:
        """Token ids of the user turn for ``question`` and the assistant header."""
        return self._user_ids + self.image_block + self._encode("\n" + question.strip() + _SUFFIX)

    def answer_ids(self, answer: str) -> list[int]:
        """Token ids of ``answer`` followed by ``<|im_end|>`` (the training target)."""
        return [*self._encode(answer.strip()), self.eos_token_id]

    def preprocess_images(
        self, images: Sequence[Image.Image], device: torch.device | str | None = None
    ) -> torch.Tensor:
        """Resize, scale and normalise ``images``.

        Args:
            images: PIL images of any size and mode (converted to RGB).
            device: where the resize runs and the result lives (default CPU).

        Returns:
            ``(n, 3, size, size)`` float32 pixels, or for Qwen2.5-VL the flattened patches
            ``(n * grid**2, 3 * 2 * 14 * 14)``.
        """
        arrays: list[np.ndarray] = []
        for i, image in enumerate(images):
            obj: object = image
            if not isinstance(obj, Image.Image):
                msg = f"images[{i}] must be a PIL.Image.Image, got {type(image).__name__}"
                raise TypeError(msg)
            arrays.append(np.asarray(image.convert("RGB"), dtype=np.uint8))
        by_size: dict[tuple[int, ...], list[int]] = {}
        for i, array in enumerate(arrays):
            by_size.setdefault(array.shape[:2], []).append(i)
        groups = [
            (
                torch.tensor(idx),
                torch.from_numpy(np.stack([arrays[i] for i in idx])).permute(0, 3, 1, 2),
            )
            for idx in by_size.values()
        ]
        return self.preprocess_uint8(groups, len(images), device)

    def preprocess_uint8(
        self,
        groups: Sequence[tuple[torch.Tensor, torch.Tensor]],
        count: int,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """:meth:`preprocess_images` for images already held as ``uint8`` tensors.

        Args:
            groups: ``(rows, pixels)`` pairs: ``pixels`` is ``(k, 3, h, w)`` uint8 RGB (one
                size per group) and ``rows`` the ``k`` positions of those images in the batch.
            count: images in the batch; every position must be covered once.
            device: where the resize runs and the result lives (default CPU).

        Returns:
            The same as :meth:`preprocess_images`.
        """
        for _rows, raw in groups:
            if raw.dtype != torch.uint8 or raw.dim() != 4 or raw.shape[1] != 3:
                msg = (
                    f"preprocess_uint8 takes (k, 3, h, w) uint8 RGB pixels, got "
                    f"{raw.dtype} of shape {tuple(raw.shape)}; pass PIL images to "
                    "preprocess_images instead"
                )
                raise ValueError(msg)
        lay = self.layout
        out = torch.empty(count, 3, lay.size, lay.size, device=device)
        for rows, raw in groups:
            x = raw.to(out.device, non_blocking=True).float().div_(255.0)
            if x.shape[-2:] != (lay.size, lay.size):
                x = F.interpolate(x, size=(lay.size, lay.size), mode="bicubic", align_corners=False)
            out[rows.to(out.device)] = x.clamp_(0.0, 1.0)
        mean = torch.tensor(lay.mean, device=out.device).view(1, 3, 1, 1)
        std = torch.tensor(lay.std, device=out.device).view(1, 3, 1, 1)
        out = (out - mean) / std
        return self._patchify(out) if lay.qwen_patch else out

    def _patchify(self, x: torch.Tensor) -> torch.Tensor:
        """Qwen2VLImageProcessor's patch order: (gh/m, gw/m, m, m) x (C, T, p, p)."""
        lay = self.layout
        p, m, t = int(lay.qwen_patch or 0), lay.merge_size, lay.temporal_patch_size
        n, c, g = x.shape[0], x.shape[1], lay.grid
        x = x.reshape(n, c, g // m, m, p, g // m, m, p)
        x = x.permute(0, 2, 5, 3, 6, 1, 4, 7)  # n, gh/m, gw/m, mh, mw, C, ph, pw
        x = x.unsqueeze(6).expand(*x.shape[:6], t, p, p)
        return x.reshape(n * g * g, c * t * p * p)

    def __call__(
        self,
        images: Image.Image | Sequence[Image.Image],
        questions: str | Sequence[str],
        answers: str | Sequence[str] | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> BatchFeature:
        """Build one left-padded batch.

        Args:
            images: one image per question.
            questions: the questions (a single string makes a batch of one).
            answers: optional targets; when given, each sequence ends with the answer and
                ``<|im_end|>``, and ``labels`` marks those tokens (others are -100).
            device: device of the returned tensors (the image resize runs there too).
            dtype: dtype of ``pixel_values`` (default float32), e.g. the model's dtype.

        Returns:
            A ``BatchFeature`` with ``input_ids``, ``attention_mask``, ``pixel_values``,
            (with answers) ``labels`` and (Qwen2.5-VL) ``image_grid_thw`` and
            ``mm_token_type_ids``; pass it to ``model.generate(**batch)``.
        """
        from transformers import BatchFeature

        imgs = _as_list(images, Image.Image, "images")
        qs = _as_list(questions, str, "questions")
        ans = None if answers is None else _as_list(answers, str, "answers")
        if len(imgs) != len(qs) or (ans is not None and len(ans) != len(qs)):
            sizes = f"{len(imgs)} images, {len(qs)} questions" + (
                f", {len(ans)} answers" if ans is not None else ""
            )
            msg = f"pass one image (and one answer) per question, got {sizes}"
            raise ValueError(msg)
        if not qs:
            msg = "the batch is empty: pass at least one (image, question) pair"
            raise ValueError(msg)
        data = self.encode_text(
            [str(q) for q in qs], None if ans is None else [str(a) for a in ans], device
        )
        pixels = self.preprocess_images(cast("list[Image.Image]", imgs), device)
        data |= self.vision_inputs(pixels if dtype is None else pixels.to(dtype), len(qs))
        return BatchFeature(data=data)

    def encode_text(
        self,
        questions: Sequence[str],
        answers: Sequence[str] | None = None,
        device: torch.device | str | None = None,
    ) -> dict[str, torch.Tensor]:
        """The token half of :meth:`__call__` (:meth:`vision_inputs` is the other).

        Returns:
            ``input_ids``, ``attention_mask``, (with answers) ``labels`` and (Qwen2.5-VL)
            ``mm_token_type_ids``, left padded, on ``device``.
        """
        seqs, labels = [], []
        for i, q in enumerate(questions):
            prompt = self.prompt_ids(q)
            target = self.answer_ids(answers[i]) if answers is not None else []
            seqs.append(prompt + target)
            labels.append([IGNORE_INDEX] * len(prompt) + target)
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        lab = torch.full((len(seqs), width), IGNORE_INDEX, dtype=torch.long)
        for i, (s, lb) in enumerate(zip(seqs, labels, strict=True)):
            ids[i, width - len(s) :] = torch.tensor(s)
            mask[i, width - len(s) :] = 1
            lab[i, width - len(s) :] = torch.tensor(lb)
        data: dict[str, torch.Tensor] = {
            "input_ids": ids.to(device),
            "attention_mask": mask.to(device),
        }
        if answers is not None:
            data["labels"] = lab.to(device)
        if self.mm_token_type_ids:
            data["mm_token_type_ids"] = (ids == self.image_token_id).long().to(device)
        return data

    def vision_inputs(self, pixels: torch.Tensor, count: int) -> dict[str, torch.Tensor]:
        """What the vision tower reads for ``count`` images of preprocessed ``pixels``.

        Returns:
            ``pixel_values`` and, for Qwen2.5-VL, ``image_grid_thw`` (on ``pixels``' device).
        """
        inputs = {"pixel_values": pixels}
        if self.mm_token_type_ids:
            g = self.layout.grid
            inputs["image_grid_thw"] = torch.tensor([[1, g, g]] * count, device=pixels.device)
        return inputs

    def decode(self, ids: torch.Tensor | Sequence[int]) -> str:
        """Decode generated ids, dropping special tokens and surrounding whitespace."""
        seq = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        text = self.tokenizer.decode(
            seq, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )
        return str(text).strip()
