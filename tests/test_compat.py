"""The bridge over transformers' ``past_key_values`` -> ``cache`` rename (5.24)."""

from __future__ import annotations

import importlib
import warnings

import pytest
import torch
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

from halfv._compat import cache_from_kwargs, cache_from_output, cache_kwarg


def test_cache_is_found_under_either_name() -> None:
    cache = DynamicCache()
    assert cache_from_kwargs({"cache": cache}) is cache
    assert cache_from_kwargs({"past_key_values": cache}) is cache
    assert cache_from_kwargs({"cache": None, "past_key_values": cache}) is cache
    assert cache_from_kwargs({}) is None


def test_the_installed_release_takes_its_cache_name_without_warnings() -> None:
    config = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2,
    )  # fmt: skip
    model = LlamaForCausalLM(config).eval()
    ids = torch.tensor([[1, 5, 9, 3]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with torch.no_grad():
            out = model(input_ids=ids, use_cache=True)
            cache = cache_from_output(out)
            assert isinstance(cache, DynamicCache)
            assert cache.get_seq_length() == 4
            step = model(input_ids=ids[:, -1:], use_cache=True, **{cache_kwarg(): cache})
    assert cache_from_output(step).get_seq_length() == 5


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("halfv.budget", "halfv.ops.budget"),
        ("halfv.hookspecs", "halfv.plugins.hookspecs"),
        ("halfv.model_specs", "halfv.flops.model_specs"),
        ("halfv.selection", "halfv.ops.selection"),
    ],
)
def test_module_paths_the_guides_used_before_the_regroup_still_import(old: str, new: str) -> None:
    # issue #21 moved these modules; user code written against the old guides keeps working
    assert importlib.import_module(old) is importlib.import_module(new)
    name = old.rpartition(".")[2]
    assert getattr(importlib.import_module("halfv"), name) is importlib.import_module(new)
