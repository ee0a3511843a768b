"""``inputs_embeds`` that still hold the visual tokens' embeddings are pruned like ``input_ids``.

transformers' own ``test_inputs_embeds_matches_input_ids`` (every family) calls the model
with ``inputs_embeds = embed(input_ids)`` and expects the ``input_ids`` call's output. The
model finds its visual rows in such embeddings by comparing each row with the image
token's embedding (``get_placeholder_mask``); halfv finds them the same way
(``halfv.runtime.stages.placeholder_mask``), so both calls keep the same tokens.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch

import halfv
from tiny import BUILDERS, Tiny

PRUNE = halfv.PruningConfig(ivr_layer=2, ivr_keep=0.25, ssr_layer=3, ssr_mode="prune", ssr_keep=0.1)
SAMPLES = [[4, "img", 6], [9, "img", 2]]
_MODELS: dict[str, Tiny] = {}


def _tiny(family: str) -> Tiny:
    if family not in _MODELS:
        _MODELS[family] = BUILDERS[family](layers=4)
    return _MODELS[family]


def _by_embeds(model: torch.nn.Module, inputs: dict[str, Any]) -> dict[str, Any]:
    out = dict(inputs)
    with torch.no_grad():
        out["inputs_embeds"] = model.get_input_embeddings()(out.pop("input_ids"))
    return out


def _logits(model: torch.nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits[:, -1]


# InternVL finds its placeholders by the same rule as LLaVA (one image token id); left out
# for time. Qwen2.5-VL has two visual ids (image, video).
@pytest.mark.parametrize("family", ["llava", "llava_next", "qwen2_5_vl"])
def test_inputs_embeds_with_placeholders_prune_like_input_ids(family: str) -> None:
    tiny = _tiny(family)
    model = tiny.model
    by_ids = tiny.prompt(SAMPLES)
    by_embeds = _by_embeds(model, by_ids)
    plain_ids, plain_embeds = _logits(model, by_ids), _logits(model, by_embeds)
    with halfv.apply(model, PRUNE) as handle:
        got_ids = _logits(model, by_ids)
        ids_stats = handle.stats
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no "cannot see which rows are visual" warning
            got_embeds = _logits(model, by_embeds)
        embeds_stats = handle.stats
    assert ids_stats is not None
    assert embeds_stats is not None
    assert embeds_stats.spans == ids_stats.spans  # the same visual rows, found in the embeddings
    assert embeds_stats.layers[-1].sequence < embeds_stats.layers[0].sequence
    if torch.equal(plain_ids, plain_embeds):  # the model itself answers both calls alike
        assert embeds_stats.kept_positions == ids_stats.kept_positions
        torch.testing.assert_close(got_embeds, got_ids, rtol=0, atol=0)
    else:  # Qwen2.5-VL: without input_ids its M-RoPE positions are the text ones
        assert family == "qwen2_5_vl"


def test_merged_inputs_embeds_are_not_mistaken_for_placeholders() -> None:
    """Embeddings that already hold the image features match no visual token's embedding:
    the call is not pruned, with the warning that names the fix."""
    tiny = _tiny("llava")
    model = tiny.model
    inputs = tiny.prompt(SAMPLES[:1])
    merged = _by_embeds(model, inputs)
    visual = inputs["input_ids"] == model.config.image_token_id
    merged["inputs_embeds"][visual] = 0.5
    del merged["pixel_values"]
    plain = _logits(model, merged)
    with halfv.apply(model, PRUNE) as handle:
        with pytest.warns(UserWarning, match="visual_positions"):
            got = _logits(model, merged)
        assert handle.stats is None
    torch.testing.assert_close(got, plain, rtol=0, atol=0)
