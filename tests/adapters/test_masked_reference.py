"""The built-in families against halfv.testing's independent references.

Each pruned prefill is compared with the model's own layers with the dropped keys masked
(:func:`halfv.testing.reference.masked_reference`); under eager attention the SSR
selection is compared with the model's own attention; cached decode with recompute.
"""

from __future__ import annotations

import pytest
import torch

import halfv
from halfv.testing import check_backbone
from halfv.testing.reference import masked_reference
from tiny import BUILDERS, Tiny

FAMILIES = sorted(BUILDERS)
_CACHE: dict[tuple[str, str], Tiny] = {}


def _tiny(family: str, attention: str) -> Tiny:
    if (family, attention) not in _CACHE:
        built = BUILDERS[family]()
        built.model.set_attn_implementation(attention)
        _CACHE[family, attention] = built
    return _CACHE[family, attention]


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("family", FAMILIES)
def test_family_meets_the_backbone_contract(family: str, attention: str) -> None:
    tiny = _tiny(family, attention)
    check_backbone(tiny.model, tiny.prompt([[3, "img", 6], [2, "img", 1, "img", 4]], seed=2))


def test_reference_masks_something() -> None:
    """The reference is not the plain model: masking the dropped keys changes the logits,
    and masking nothing reproduces them."""
    tiny = _tiny("llava", "sdpa")
    inputs = tiny.prompt([[3, "img", 6]])
    adapter = halfv.get_adapter_for(tiny.model)
    layers, ids = adapter.decoder_layers(tiny.model), adapter.visual_token_ids(tiny.model)
    length = inputs["input_ids"].shape[1]
    with torch.no_grad():
        plain = tiny.model(**inputs).logits
    everything = masked_reference(
        tiny.model, inputs, {2: [tuple(range(length))]}, layers=layers, visual_ids=ids
    )
    torch.testing.assert_close(everything.logits, plain, atol=1e-5, rtol=1e-5)
    text_only = [p for p in range(length) if int(inputs["input_ids"][0, p]) not in ids]
    masked = masked_reference(
        tiny.model, inputs, {2: [tuple(text_only)]}, layers=layers, visual_ids=ids
    )
    assert not torch.allclose(masked.logits[:, -1], plain[:, -1], atol=1e-3)
