"""A tiny random LLaVA saved as a model folder that ``from_pretrained`` loads offline.

``AutoModelForImageTextToText.from_pretrained(path)`` and ``AutoProcessor.from_pretrained(path)``
both work on the folder :func:`save_tiny_llava` writes, with no hub access: the model is
:func:`tests.tiny.build_llava` (random weights), the processor a real ``LlavaProcessor``
around the torchvision-free ``CLIPImageProcessorPil`` and a word-level tokenizer built in
memory (whitespace words, a fixed vocabulary of the tiny model's 1,000 ids), with a small
chat template. Code that takes a model path, a pipeline or an evaluation harness, runs on
it as on a hub checkpoint.
"""

from __future__ import annotations

from pathlib import Path

from tiny import build_llava

__all__ = ["CHAT_TEMPLATE", "IMAGE_SIZE", "IMAGE_TOKEN", "WORDS", "save_tiny_llava"]

IMAGE_SIZE = 112  # 8 x 8 patches of 14 px: 64 visual tokens per image
IMAGE_TOKEN = "<image>"
IMAGE_TOKEN_ID = 998  # tests.tiny.build_llava's image_token_id
VOCAB_SIZE = 1000
SPECIAL = ("<pad>", "<unk>", "<s>", "</s>")
#: words the tokenizer knows besides w<i> fillers: enough for short VQA prompts and answers
WORDS = [
    "what",
    "is",
    "the",
    "colour",
    "color",
    "of",
    "shape",
    "in",
    "this",
    "image",
    "picture",
    "answer",
    "with",
    "one",
    "word",
    "a",
    "an",
    "red",
    "green",
    "blue",
    "yellow",
    "white",
    "black",
    "circle",
    "square",
    "triangle",
    "rectangle",
    "how",
    "many",
    "are",
    "there",
    "yes",
    "no",
    "left",
    "right",
    "top",
    "bottom",
    "which",
    "side",
    "?",
    ".",
    ",",
    ":",
]

CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] | upper }}: "
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<image> "
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}\n{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def _tokenizer() -> object:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab: dict[str, int] = {tok: i for i, tok in enumerate(SPECIAL)}
    for word in [*WORDS, "USER", "ASSISTANT"]:
        vocab.setdefault(word, len(vocab))
    filler = 0
    while len(vocab) < VOCAB_SIZE:
        if len(vocab) == IMAGE_TOKEN_ID:
            vocab[IMAGE_TOKEN] = IMAGE_TOKEN_ID
            continue
        vocab[f"w{filler}"] = len(vocab)
        filler += 1
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.decoder = decoders.WordPiece(prefix="##", cleanup=True)  # joins words with spaces
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        padding_side="left",
    )
    tokenizer.add_special_tokens({"extra_special_tokens": [IMAGE_TOKEN]})
    if tokenizer.convert_tokens_to_ids(IMAGE_TOKEN) != IMAGE_TOKEN_ID:
        msg = f"{IMAGE_TOKEN} must have id {IMAGE_TOKEN_ID}, the tiny LLaVA's image_token_id"
        raise AssertionError(msg)
    return tokenizer


def save_tiny_llava(path: str | Path, layers: int = 6, seed: int = 0) -> Path:
    """Write a tiny random LLaVA and its processor to ``path``; return the path.

    Args:
        path: folder to write (created if missing).
        layers: decoder layers of the language model.
        seed: seed of the random weights.
    """
    from transformers import LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tiny = build_llava(layers=layers, image_size=IMAGE_SIZE, seed=seed)
    tokenizer = _tokenizer()
    tiny.model.config.pad_token_id = 0
    tiny.model.generation_config.pad_token_id = 0
    tiny.model.generation_config.eos_token_id = 3
    tiny.model.save_pretrained(path)
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessorPil(
            size={"shortest_edge": IMAGE_SIZE},
            crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        ),
        tokenizer=tokenizer,
        patch_size=14,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE,
    )
    processor.save_pretrained(path)
    return path
