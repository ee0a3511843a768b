"""transformers' fast-generation recipe on a pruned model: static cache, compiled decode.

``generate(..., cache_implementation="static")`` with a ``CompileConfig`` compiles the
decode step (the prefill stays eager). With halfv applied the step must give the same
tokens and logits as halfv with a ``DynamicCache`` (and the unpruned model the same with
either cache), trace as one graph (``fullgraph=True`` makes any graph break an error, and
a host read of a tensor value inside the step is one: ``capture_scalar_outputs`` is off),
and compile once per shape: a new prompt of the same shape, a new plan, reuses the graph.
The pruned layers' static caches are shorter, so each compiled step attends over fewer
entries. ``benchmarks/bench_throughput.py`` times the recipe on a GPU (docs/speed.md).

The models decode side by side: ``unpruned`` untouched and ``halfv`` a twin sharing its
weights with halfv applied once (a new ``halfv.apply`` registers new hooks, which
``torch.compile`` guards on; see :func:`test_a_new_apply_compiles_anew`).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import nullcontext
from typing import Any

import pytest
import torch
from torch._dynamo.utils import counters

import halfv
from tiny import BUILDERS, Tiny

PRUNE = halfv.PruningConfig(ivr_layer=2, ivr_keep=0.25, ssr_layer=3, ssr_mode="prune", ssr_keep=0.1)
FREEZE = halfv.PruningConfig(ivr_layer=1, ivr_keep=0.5, ssr_layer=3, ssr_mode="freeze")
RAGGED: list[list[int | str]] = [
    [4, "img", 6],
    [9, "img", 2],
]  # left padding and, after the prune, dummy slots
NEW = 5

_MODELS: dict[str, Tiny] = {}


def _tiny(family: str) -> Tiny:
    if family not in _MODELS:
        built = BUILDERS[family](layers=4)
        built.model.generation_config.pad_token_id = 0
        _MODELS[family] = built
    return _MODELS[family]


def _twin(model: torch.nn.Module) -> Any:
    """A second model object sharing ``model``'s weights (and not its compiled call:
    transformers keeps ``torch.compile(model.__call__)`` on the model, and a copy of it
    would still call the original)."""
    shared = {id(t): t for t in (*model.parameters(), *model.buffers())}
    twin = copy.deepcopy(model, shared)
    for name in ("_compiled_call", "_last_compile_config"):
        twin.__dict__.pop(name, None)
    return twin


def _compile(backend: str) -> Any:
    from transformers import CompileConfig

    config = CompileConfig(fullgraph=True, dynamic=False, backend=backend, mode=None)  # type: ignore[arg-type]
    config._compile_all_devices = True  # type: ignore[assignment]  # compile on the CPU too
    return config


def _generate(model: Any, inputs: dict[str, Any], **kw: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy tokens and per-step logits of ``NEW`` new tokens."""
    with torch.inference_mode():
        out = model.generate(
            **inputs, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False,
            return_dict_in_generate=True, output_logits=True, **kw,
        )  # fmt: skip
    return out.sequences[:, inputs["input_ids"].shape[1] :], torch.stack(out.logits, 1)


def _graphs() -> int:
    return int(counters["stats"]["unique_graphs"])


@pytest.fixture
def fresh_dynamo() -> Iterator[None]:
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize(
    ("family", "config", "backend"),
    [("llava", FREEZE, "eager"), ("qwen2_5_vl", PRUNE, "aot_eager")],
    ids=["llava-freeze", "qwen-prune-aot"],
)
@pytest.mark.usefixtures("fresh_dynamo")
def test_static_and_compiled_decode_equal_the_dynamic_cache(
    family: str, config: halfv.PruningConfig, backend: str
) -> None:
    tiny = _tiny(family)
    inputs = tiny.prompt(RAGGED)
    length = int(inputs["input_ids"].shape[1]) + NEW
    static = {"cache_implementation": "static", "max_cache_len": length}
    unpruned, twin = tiny.model, _twin(tiny.model)
    with halfv.apply(twin, config) as handle:
        for name, model in (("unpruned", unpruned), ("halfv", twin)):
            ref_tokens, ref_logits = _generate(model, inputs)
            for kw in (
                static | {"disable_compile": True},
                static | {"compile_config": _compile(backend)},
            ):
                before = _graphs()
                tokens, logits = _generate(model, inputs, **kw)
                torch.testing.assert_close(tokens, ref_tokens, rtol=0, atol=0, msg=name)
                torch.testing.assert_close(logits, ref_logits, rtol=1e-5, atol=1e-5, msg=name)
                compiled = "compile_config" in kw
                # one compiled graph for the whole decode, and nothing eager in it from halfv
                assert _graphs() - before == compiled, (name, kw.keys())
                if name == "halfv":  # eager decode steps run halfv's hooks (counted)
                    assert handle.decode_steps == (0 if compiled else NEW - 1)
            if name == "halfv":
                stats = handle.stats
                assert stats is not None
                assert stats.layers[-1].sequence[0] < inputs["input_ids"].shape[1]  # pruned
    assert sum(counters["graph_break"].values()) == 0, dict(counters["graph_break"])


@pytest.mark.usefixtures("fresh_dynamo")
def test_a_new_prompt_of_the_same_shape_reuses_the_compiled_step() -> None:
    """The plan (kept slots, layouts, dummies) is data of the graph, not a guard on it."""
    tiny = _tiny("qwen2_5_vl")
    first, second = tiny.prompt(RAGGED, seed=0), tiny.prompt(RAGGED, seed=5)
    assert first["input_ids"].shape == second["input_ids"].shape
    assert not torch.equal(first["pixel_values"], second["pixel_values"])
    length = int(first["input_ids"].shape[1]) + NEW
    kw = {"cache_implementation": "static", "max_cache_len": length}
    twin = _twin(tiny.model)
    with halfv.apply(twin, PRUNE) as handle:
        _generate(twin, first, **kw, compile_config=_compile("eager"))
        compiled = _graphs()
        tokens, logits = _generate(twin, second, **kw, compile_config=_compile("eager"))
        assert _graphs() == compiled == 1
        assert handle.decode_steps == 0  # the steps ran inside the compiled graph
        ref_tokens, ref_logits = _generate(twin, second)
        assert handle.decode_steps == NEW - 1
    torch.testing.assert_close(tokens, ref_tokens, rtol=0, atol=0)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-5, atol=1e-5)


@pytest.mark.usefixtures("fresh_dynamo")
def test_pruned_layers_cache_fewer_entries_in_a_static_cache() -> None:
    """What makes a pruned decode step cheaper: its static layers are shorter."""
    tiny = _tiny("llava")
    inputs = tiny.prompt(RAGGED)
    length = int(inputs["input_ids"].shape[1]) + NEW
    kw = {"cache_implementation": "static", "max_cache_len": length, "disable_compile": True}
    sizes = {}
    for side in ("unpruned", "halfv"):
        with halfv.apply(tiny.model, PRUNE) if side == "halfv" else nullcontext(), torch.no_grad():
            out = tiny.model.generate(
                **inputs, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False,
                return_dict_in_generate=True, **kw,
            )  # fmt: skip
        sizes[side] = [int(layer.keys.shape[-2]) for layer in out.past_key_values.layers]
    assert sizes["unpruned"] == [length] * 4
    assert sizes["halfv"][:2] == [length] * 2  # before the IVR layer: the whole prompt
    assert all(s < length for s in sizes["halfv"][2:])
    assert sizes["halfv"][3] < sizes["halfv"][2]  # SSR prunes further


@pytest.mark.usefixtures("fresh_dynamo")
def test_a_new_apply_compiles_anew() -> None:
    """A documented cost, not a wrong answer: ``torch.compile`` guards on a module's hooks,
    and each ``halfv.apply`` registers new ones, so the first compiled generate after an
    apply compiles the step again; within one apply it does not."""
    tiny = _tiny("llava")
    inputs = tiny.prompt(RAGGED)
    length = int(inputs["input_ids"].shape[1]) + NEW
    kw = {"cache_implementation": "static", "max_cache_len": length}
    twin = _twin(tiny.model)
    counts = []
    for _ in range(2):
        with halfv.apply(twin, PRUNE):
            for _ in range(2):
                _generate(twin, inputs, **kw, compile_config=_compile("eager"))
                counts.append(_graphs())
    assert counts == [1, 1, 2, 2]
