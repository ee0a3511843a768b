"""halfv under the ways real code calls a transformers model (issue: runtime v2).

Threads, deep copies and pickles, assisted and prompt-lookup decoding, prompts that end on
an image token, stats after removal, training with labels, ``inputs_embeds``, attention
outputs under freeze, static caches and ``use_cache=False``. Each test compares against
the same model called the plain way (one thread, ``generate`` with a DynamicCache).
"""

from __future__ import annotations

import copy
import io
import threading
import warnings
from typing import Any

import pytest
import torch

import halfv
from halfv._compat import cache_kwarg
from halfv.policies import UniformPolicy
from tiny import BUILDERS, Tiny

PRUNE = halfv.PruningConfig(ivr_layer=2, ivr_keep=0.25, ssr_layer=3, ssr_mode="prune", ssr_keep=0.1)
FREEZE = halfv.PruningConfig(ivr_layer=2, ivr_keep=0.5, ssr_layer=3, ssr_mode="freeze")
KEEP_ALL = halfv.PruningConfig(ivr_layer=2, ivr_keep=1.0, ssr_layer=None)
SAMPLES = [[4, "img", 6], [9, "img", 2]]

_MODELS: dict[tuple[str, str], Tiny] = {}


def _tiny(family: str = "llava", attention: str = "sdpa") -> Tiny:
    key = (family, attention)
    if key not in _MODELS:
        built = BUILDERS[family](layers=4)
        built.model.set_attn_implementation(attention)
        _MODELS[key] = built
    return _MODELS[key]


def _greedy(model: torch.nn.Module, inputs: dict[str, Any], n: int = 5, **kw: Any) -> torch.Tensor:
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False, **kw)
    return out[:, inputs["input_ids"].shape[1] :]


def _logits(model: torch.nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits[:, -1]


# ---------------------------------------------------------------------- threads
@pytest.mark.parametrize("family", ["llava", "qwen2_5_vl"])
def test_threads_each_get_their_own_answer(family: str) -> None:
    tiny = _tiny(family)
    prompts = [tiny.prompt(SAMPLES[:1], seed=s) for s in range(4)]
    prompts += [tiny.prompt(SAMPLES, seed=s) for s in range(4, 6)]
    with halfv.apply(tiny.model, PRUNE):
        expected = [_greedy(tiny.model, p) for p in prompts]
        results: dict[tuple[int, int], torch.Tensor] = {}
        errors: list[BaseException] = []
        start = threading.Barrier(3)

        def worker(w: int) -> None:
            try:
                start.wait()
                for r in range(3):
                    i = (w + r) % len(prompts)
                    results[(w, i)] = _greedy(tiny.model, prompts[i])
            except Exception as exc:  # noqa: BLE001  # any failure fails the test below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(w,)) for w in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors, errors
    assert len(results) == 9
    for (_, i), tokens in results.items():
        torch.testing.assert_close(tokens, expected[i], rtol=0, atol=0)


# ---------------------------------------------------------------------- copies
@pytest.mark.parametrize("how", ["deepcopy", "torch.save"])
def test_copy_of_an_applied_model_is_pruned_by_its_own_hooks(how: str) -> None:
    tiny = BUILDERS["llava"](layers=4)
    model, inputs = tiny.model, tiny.prompt(SAMPLES[:1])
    plain = _logits(BUILDERS["llava"](layers=4).model, inputs)  # same seed, same weights
    with halfv.apply(model, FREEZE) as handle:
        if how == "deepcopy":
            pruned = _logits(model, inputs)  # a copy taken after a call, mid-session
            twin = copy.deepcopy(model)
        else:
            # transformers' own output-capturing hooks, installed by a first forward, are
            # closures that pickle refuses, with or without halfv: save before calling
            buffer = io.BytesIO()
            torch.save(model, buffer)
            buffer.seek(0)
            twin = torch.load(buffer, weights_only=False)
            pruned = _logits(model, inputs)
        twin_handle = halfv.handle_of(twin)
        assert twin_handle is not None
        assert twin_handle is not handle
        assert twin_handle.model is twin
        torch.testing.assert_close(_logits(twin, inputs), pruned, rtol=0, atol=0)
        stats = twin_handle.stats
        assert stats is not None
        assert stats.layers[3].frozen
        # the copy runs its own layers: zeroing one changes the copy, not the original
        layer = halfv.get_adapter_for(twin).decoder_layers(twin)[3]
        with torch.no_grad():
            for p in layer.mlp.parameters():
                p.zero_()
        assert not torch.allclose(_logits(twin, inputs), pruned)
        torch.testing.assert_close(_logits(model, inputs), pruned, rtol=0, atol=0)
        twin_handle.remove()
        assert halfv.handle_of(twin) is None
        assert halfv.handle_of(model) is handle
    assert halfv.handle_of(model) is None
    torch.testing.assert_close(_logits(model, inputs), plain, rtol=0, atol=0)


# ---------------------------------------------------------------------- decoding modes
def _assistant() -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(7)
    cfg = LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        vocab_size=1000,
    )
    return LlamaForCausalLM(cfg).eval()


@pytest.mark.parametrize(
    ("family", "mode"),
    # transformers itself refuses a text-only assistant for Qwen2.5-VL (it forwards
    # mm_token_type_ids to it), with or without halfv
    [("llava", "assistant"), ("llava", "prompt-lookup"), ("qwen2_5_vl", "prompt-lookup")],
)
def test_speculative_decoding_equals_greedy(family: str, mode: str) -> None:
    tiny = _tiny(family)
    extra: dict[str, Any] = {"prompt_lookup_num_tokens": 3}
    if mode == "assistant":
        extra = {"assistant_model": _assistant()}
    with halfv.apply(tiny.model, PRUNE):
        for seed in range(3):
            inputs = tiny.prompt(SAMPLES[:1], seed=seed)
            expected = _greedy(tiny.model, inputs, n=6)
            got = _greedy(tiny.model, inputs, n=6, **extra)
            torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_use_cache_false_prunes_each_forward_anew() -> None:
    tiny = _tiny("llava")
    inputs = tiny.prompt(SAMPLES[:1])
    with halfv.apply(tiny.model, PRUNE) as handle:
        tokens = _greedy(tiny.model, inputs, n=3, use_cache=False)
        stats = handle.stats
        assert stats is not None
        # the last forward saw the prompt and two generated tokens, and pruned it
        assert stats.prompt_tokens[0] == inputs["input_ids"].shape[1] + 2
        assert handle.decode_steps == 0
        # and each step equals a fresh pruned forward of the grown sequence
        grown = dict(inputs)
        grown["input_ids"] = torch.cat([inputs["input_ids"], tokens[:, :2]], dim=1)
        grown["attention_mask"] = torch.ones_like(grown["input_ids"])
        assert int(_logits(tiny.model, grown).argmax()) == int(tokens[0, 2])


# ---------------------------------------------------------------------- query position
@pytest.mark.parametrize("family", ["llava", "qwen2_5_vl"])
def test_prompt_ending_on_an_image_token_keeps_the_query(family: str) -> None:
    tiny = _tiny(family)
    inputs = tiny.prompt([[5, "img"]])
    last = inputs["input_ids"].shape[1] - 1
    config = PRUNE.model_copy(update={"ivr_keep": 0.05, "ssr_keep": 0.02})
    with halfv.apply(tiny.model, config) as handle:
        _greedy(tiny.model, inputs, n=2)
        stats = handle.stats
        assert stats is not None
        for kept in stats.kept_positions.values():
            assert kept[0][-1] == last


# ---------------------------------------------------------------------- training
@pytest.mark.parametrize("family", ["llava", "qwen2_5_vl"])
@pytest.mark.parametrize("config", [PRUNE, FREEZE], ids=["prune", "freeze"])
def test_training_with_labels(family: str, config: halfv.PruningConfig) -> None:
    tiny = BUILDERS[family](layers=4)
    model = tiny.model.train()
    inputs = tiny.prompt(SAMPLES)
    labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
    visual = torch.isin(labels, torch.tensor(halfv.get_adapter_for(model).visual_token_ids(model)))
    labels = labels.masked_fill(visual, -100)
    given = labels.clone()
    with halfv.apply(model, config) as handle:
        out = model(**inputs, labels=labels)
        stats = handle.stats
    assert torch.equal(labels, given)  # the caller's labels are not touched
    assert stats is not None
    assert out.loss is not None
    assert torch.isfinite(out.loss)
    out.loss.backward()
    vision = [p for n, p in model.named_parameters() if "vision" in n or "visual" in n]
    projector = [p for n, p in model.named_parameters() if "projector" in n or "merger" in n]
    for group in (vision, projector):
        assert group
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in group)
    # the loss is the model's own loss over the kept rows, labels gathered the same way
    kept = stats.kept_positions[max(stats.kept_positions)]
    shifted_loss = []
    for b, positions in enumerate(kept):
        rows = torch.tensor(positions)
        logits = out.logits[b, -len(positions) :]
        target = given[b, rows]
        shifted_loss.append((logits[:-1], target[1:]))
    logits = torch.cat([lg for lg, _ in shifted_loss]).float()
    targets = torch.cat([t for _, t in shifted_loss])
    expected = torch.nn.functional.cross_entropy(logits, targets, ignore_index=-100)
    torch.testing.assert_close(out.loss, expected, rtol=1e-5, atol=1e-5)
    model.eval()


def test_training_at_keep_all_equals_the_plain_loss() -> None:
    tiny = BUILDERS["llava"](layers=4)
    inputs = tiny.prompt(SAMPLES)
    labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
    plain = tiny.model(**inputs, labels=labels).loss
    with halfv.apply(tiny.model, KEEP_ALL):
        same = tiny.model(**inputs, labels=labels).loss
    torch.testing.assert_close(same, plain, rtol=0, atol=0)


# ---------------------------------------------------------------------- inputs_embeds
def test_inputs_embeds_warn_once_and_prune_with_named_positions() -> None:
    tiny = _tiny("llava")
    model = tiny.model
    inputs = tiny.prompt(SAMPLES[:1])
    ids = inputs["input_ids"]
    with torch.no_grad():
        embeds = model.model.get_input_embeddings()(ids)
        features = model.model.get_image_features(pixel_values=inputs["pixel_values"])
        pooled = getattr(features, "pooler_output", features)
        feats = torch.cat(list(pooled))
        visual = ids == model.config.image_token_id
        embeds[visual] = feats.to(embeds.dtype)
    by_embeds = {"inputs_embeds": embeds, "attention_mask": inputs["attention_mask"]}
    with halfv.apply(model, PRUNE) as handle:
        reference = _logits(model, inputs)
        ref_stats = handle.stats
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _logits(model, by_embeds)
            _logits(model, by_embeds)
        named = [w for w in caught if "inputs_embeds" in str(w.message)]
        assert len(named) == 1
        assert "visual_positions" in str(named[0].message)
        with handle.visual_positions(visual):
            got = _logits(model, by_embeds)
        assert handle.stats is not None
        assert ref_stats is not None
        assert handle.stats.kept_positions == ref_stats.kept_positions
        torch.testing.assert_close(got, reference, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------- outputs
@pytest.mark.parametrize("config", [PRUNE, FREEZE], ids=["prune", "freeze"])
def test_attentions_and_hidden_states_one_per_layer(config: halfv.PruningConfig) -> None:
    tiny = _tiny("llava", "eager")
    inputs = tiny.prompt(SAMPLES[:1])
    t = inputs["input_ids"].shape[1]
    with halfv.apply(tiny.model, config) as handle, torch.no_grad():
        plain_logits = tiny.model(**inputs).logits[:, -1]
        out = tiny.model(**inputs, output_attentions=True, output_hidden_states=True)
        stats = handle.stats
    assert stats is not None
    assert len(out.attentions) == 4
    assert len(out.hidden_states) == 5
    for layer, attn in zip(stats.layers, out.attentions, strict=True):
        rows = layer.sequence[0]
        assert attn.shape == (1, 4, rows, rows), (layer.layer, attn.shape)
    assert out.hidden_states[0].shape[1] == t
    torch.testing.assert_close(out.logits[:, -1], plain_logits, rtol=1e-5, atol=1e-5)
    # asked through the config instead (as transformers' own tests do), on the base model
    base = tiny.model.model
    configs = (base.config, base.config.text_config)
    for c in configs:
        c.output_attentions = True
    try:
        with halfv.apply(base, config), torch.no_grad():
            by_config = base(**inputs)
    finally:
        for c in configs:
            c.output_attentions = False
    assert len(by_config.attentions) == 4


# ---------------------------------------------------------------------- static caches
@pytest.mark.parametrize("family", ["llava", "qwen2_5_vl"])
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_static_cache(family: str, attention: str) -> None:
    tiny = _tiny(family, attention)
    inputs = tiny.prompt(SAMPLES)
    plain = _greedy(tiny.model, inputs)
    with halfv.apply(tiny.model, KEEP_ALL):
        same = _greedy(tiny.model, inputs, cache_implementation="static")
    torch.testing.assert_close(same, plain, rtol=0, atol=0)
    for config in (PRUNE, FREEZE):
        with halfv.apply(tiny.model, config):
            dynamic = _greedy(tiny.model, inputs)
            static = _greedy(tiny.model, inputs, cache_implementation="static")
            again = _greedy(tiny.model, tiny.prompt(SAMPLES[:1]), cache_implementation="static")
            once = _greedy(tiny.model, tiny.prompt(SAMPLES[:1]))
        torch.testing.assert_close(static, dynamic, rtol=0, atol=0)
        torch.testing.assert_close(again, once, rtol=0, atol=0)


def test_a_composed_pipeline_serves_another_thread() -> None:
    """A plugin-style policy object composes with threads too (no shared tap state)."""
    tiny = _tiny("qwen2_5_vl")
    adapter = halfv.get_adapter_for(tiny.model)
    pipeline = halfv.Pipeline(
        PRUNE, adapter, UniformPolicy(), halfv.get_ssr_policy("prune"), halfv.get_estimator("tme")
    )
    inputs = tiny.prompt(SAMPLES)
    with pipeline.attach(tiny.model):
        first = _greedy(tiny.model, inputs)
        out: list[torch.Tensor] = []
        t = threading.Thread(target=lambda: out.append(_greedy(tiny.model, inputs)))
        t.start()
        t.join()
    torch.testing.assert_close(out[0], first, rtol=0, atol=0)


def test_compiled_static_decode_has_no_graph_breaks() -> None:
    """transformers' fast-generation recipe: a static cache and a compiled decode step.

    ``fullgraph=True`` turns any graph break inside the step into an error; the eager
    backend keeps the test to tracing (seconds on a CPU).
    """
    from transformers import CompileConfig

    tiny = _tiny("llava")
    inputs = tiny.prompt(SAMPLES)
    compile_config = CompileConfig(fullgraph=True, backend="eager", mode=None, dynamic=False)
    compile_config._compile_all_devices = True
    torch._dynamo.reset()
    with halfv.apply(tiny.model, PRUNE) as handle:
        eager = _greedy(tiny.model, inputs, n=6)
        counters = torch._dynamo.utils.counters
        counters.clear()
        compiled = _greedy(
            tiny.model, inputs, n=6, cache_implementation="static", compile_config=compile_config
        )
        assert handle.decode_steps == 0  # the decode steps ran inside the compiled graph
    torch._dynamo.reset()
    torch.testing.assert_close(compiled, eager, rtol=0, atol=0)
    assert sum(counters["graph_break"].values()) == 0, dict(counters["graph_break"])
    assert counters["stats"]["unique_graphs"] >= 1


def test_a_copied_prefilled_cache_decodes_like_the_original() -> None:
    """A deep copy of a prefilled cache carries its plan: decoding from the copy equals
    decoding from the original (a hand-written loop, explicit positions; eager attention,
    whose decode masks must be remapped per pruned layer)."""
    from transformers import DynamicCache

    tiny = _tiny("llava", "eager")
    inputs = tiny.prompt(SAMPLES[:1])
    t = inputs["input_ids"].shape[1]
    with halfv.apply(tiny.model, PRUNE), torch.no_grad():
        cache = DynamicCache(config=tiny.model.config)
        first = tiny.model(**inputs, **{cache_kwarg(): cache}).logits[:, -1]
        twin = copy.deepcopy(cache)
        step = {
            "input_ids": first.argmax(-1, keepdim=True),
            "attention_mask": torch.ones(1, t + 1, dtype=torch.long),
            "position_ids": torch.tensor([[t]]),
        }
        original = tiny.model(**step, **{cache_kwarg(): cache}).logits[:, -1]
        copied = tiny.model(**step, **{cache_kwarg(): twin}).logits[:, -1]
        assert [layer.keys.shape[-2] for layer in twin.layers] != [t + 1] * 4  # pruned
    torch.testing.assert_close(copied, original, rtol=0, atol=0)
