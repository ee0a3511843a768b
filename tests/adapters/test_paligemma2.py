"""PaliGemma 2 (Gemma-2 decoder) on a tiny random model (``tiny_profile``): sliding-window
layers with a window shorter than the prompt, sandwich blocks and attention-logit soft
capping. It meets :func:`halfv.testing.check_backbone` on eager attention with and without
the soft cap (relevance equal to the model's own capped attention), with and without a
causal suffix after the bidirectional prefix. transformers 5.24 runs Gemma-2 on eager only
(``Gemma2PreTrainedModel._supports_sdpa = False``: SDPA has no soft cap), which the last
test pins."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

import halfv
from halfv.adapters import PaliGemmaAdapter
from halfv.testing import check_backbone
from tiny import Tiny
from tiny_profile import WINDOW, build_paligemma2

_CACHE: dict[float | None, Tiny] = {}


def _tiny(softcap: float | None) -> Tiny:
    if softcap not in _CACHE:
        _CACHE[softcap] = build_paligemma2(softcap=softcap)
    return _CACHE[softcap]


def test_layers_are_described_with_their_window_block_and_softcap() -> None:
    model = _tiny(1.0).model
    adapter = halfv.get_adapter_for(model)
    specs = adapter.layer_specs(model)
    assert [s.kind for s in specs] == ["sliding", "full"] * 3
    assert {s.window for s in specs if s.kind == "sliding"} == {WINDOW}
    assert {s.block for s in specs} == {"sandwich"}
    layers = adapter.decoder_layers(model)
    assert {adapter.attention_parts(layer).softcap for layer in layers} == {1.0}
    assert adapter.attention_parts(_tiny(None).model.model.language_model.layers[0]).softcap is None


@pytest.mark.parametrize(
    ("attention", "softcap", "suffix"),
    [("eager", 1.0, 0), ("eager", 1.0, 3), ("eager", None, 0)],
)
def test_paligemma2_meets_the_backbone_contract(
    attention: str, softcap: float | None, suffix: int
) -> None:
    tiny = _tiny(softcap)
    tiny.model.set_attn_implementation(attention)
    samples = [[3, "img", 6], [2, "img", "img", 4]]
    inputs = tiny.prompt(samples, seed=4)
    if suffix:  # type-1 tokens after the prefix: causal
        types = inputs["token_type_ids"]
        extra = torch.randint(10, 900, (types.shape[0], suffix))
        inputs["input_ids"] = torch.cat([inputs["input_ids"], extra], dim=1)
        inputs["attention_mask"] = torch.cat(
            [inputs["attention_mask"], torch.ones_like(extra)], dim=1
        )
        inputs["token_type_ids"] = torch.cat([types, torch.ones_like(extra)], dim=1)
    assert inputs["input_ids"].shape[1] > 2 * WINDOW  # the window hides part of the prompt
    check_backbone(tiny.model, inputs)


def test_softcap_matters() -> None:
    """The cap changes the logits: relevance that ignored it would not be the model's."""
    capped, plain = _tiny(1.0).model, _tiny(None).model
    plain.load_state_dict(capped.state_dict())
    inputs = _tiny(1.0).prompt([[3, "img", 6]], seed=1)
    for model in (capped, plain):
        model.set_attn_implementation("eager")
    with torch.no_grad():
        assert not torch.allclose(capped(**inputs).logits, plain(**inputs).logits, atol=1e-3)


def test_transformers_runs_it_on_eager_only() -> None:
    with pytest.raises(ValueError, match="scaled_dot_product_attention"):
        _tiny(None).model.set_attn_implementation("sdpa")


def test_another_decoder_is_refused() -> None:
    fake = SimpleNamespace(config=SimpleNamespace(text_config=SimpleNamespace(model_type="x9")))
    with pytest.raises(halfv.UnsupportedModelError, match="'x9'"):
        PaliGemmaAdapter().language_model(fake)  # type: ignore[arg-type]
