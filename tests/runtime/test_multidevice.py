"""halfv on models dispatched through accelerate hooks (``device_map``), CPU and CUDA.

``accelerate.dispatch_model`` wraps every decoder layer's ``forward`` in an
``AlignDevicesHook`` that moves inputs to the layer's device. halfv's instance ``forward``
of each layer (stage inputs, the ``freeze`` path) wraps that wrapper, so a dispatched model
must give the same result as the same weights without hooks. On the CPU every part stays on "cpu"
but the hooks are forced in (``force_hooks=True``); the ``gpu`` test splits the decoder
between ``cuda:0`` and the CPU.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from torch import nn

import halfv
from tiny import BUILDERS, Tiny

accelerate = pytest.importorskip("accelerate")

FAMILIES = ("llava", "qwen2_5_vl", "internvl")  # freeze (llava) and prune (the other two)
SAMPLES = [[10, "img", 20], [5, "img", 3]]  # a left-padded batch of two
NEW_TOKENS = 4


def device_map(
    model: nn.Module, layer_device: Callable[[int], str | int], other: str | int = "cpu"
) -> dict[str, str | int]:
    """One entry per decoder layer (``layer_device(i)``) and per other top-level part."""
    dmap: dict[str, str | int] = {"lm_head": other}
    for name, child in model.model.named_children():
        if name != "language_model":
            dmap[f"model.{name}"] = other
            continue
        for part, module in child.named_children():
            if part == "layers":
                for i in range(len(module)):
                    dmap[f"model.language_model.layers.{i}"] = layer_device(i)
            else:
                dmap[f"model.language_model.{part}"] = other
    return dmap


def dispatch(model: nn.Module, dmap: dict[str, str | int]) -> nn.Module:
    """``accelerate.dispatch_model`` with hooks even when every part is on one device."""
    out = accelerate.dispatch_model(model, device_map=dmap, main_device="cpu", force_hooks=True)
    assert all(hasattr(layer, "_hf_hook") for layer in out.model.language_model.layers)
    return out


def greedy(model: nn.Module, inputs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens and per-step logits ``[steps, B, V]`` of a greedy generate."""
    out = model.generate(
        **inputs,
        max_new_tokens=NEW_TOKENS,
        do_sample=False,
        output_logits=True,
        return_dict_in_generate=True,
    )
    return out.sequences, torch.stack(out.logits).float().cpu()


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny models: a second intra-op thread only adds synchronisation (and on a busy
    2-core machine, a lot of it)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(params=FAMILIES)
def tiny_pair(request: pytest.FixtureRequest) -> tuple[Tiny, nn.Module]:
    """A tiny model and an untouched deep copy of it (built before any dispatch)."""
    tiny = BUILDERS[request.param](layers=6)
    return tiny, copy.deepcopy(tiny.model)


@torch.no_grad()
def test_keep_all_is_exact_under_accelerate_hooks(tiny_pair: tuple[Tiny, nn.Module]) -> None:
    tiny, reference = tiny_pair
    inputs = tiny.prompt(SAMPLES)
    model = dispatch(tiny.model, device_map(tiny.model, lambda i: "cpu"))
    with halfv.apply(model, {"ivr_layer": 2, "ivr_keep": 1.0}) as handle:
        logits = model(**inputs).logits
        assert handle.stats is not None
        assert len(set(handle.stats.kept_visual_per_layer())) == 1  # keep 1.0: nothing dropped
    assert torch.equal(logits, reference(**inputs).logits)


@torch.no_grad()
def test_pruned_generate_matches_the_model_without_hooks(
    tiny_pair: tuple[Tiny, nn.Module],
) -> None:
    tiny, reference = tiny_pair
    inputs = tiny.prompt(SAMPLES)
    model = dispatch(tiny.model, device_map(tiny.model, lambda i: "cpu"))
    with halfv.apply(model) as handle:
        tokens, logits = greedy(model, inputs)
        kept = handle.stats.kept_positions if handle.stats else None
        dispatched_mode = handle.ssr_mode
    with halfv.apply(reference) as handle:
        ref_tokens, ref_logits = greedy(reference, inputs)
        ref_kept = handle.stats.kept_positions if handle.stats else None
        assert dispatched_mode == handle.ssr_mode
    assert kept is not None
    assert kept == ref_kept
    assert torch.equal(tokens, ref_tokens)
    torch.testing.assert_close(logits, ref_logits, rtol=0, atol=1e-5)
    # the hooks came out again: the dispatched model runs unpruned like the reference
    torch.testing.assert_close(model(**inputs).logits, reference(**inputs).logits, rtol=0, atol=0)


# transformers 5.17's generate compares input_ids' device with model.device, which is
# "meta" for a cpu_offload'ed model, and warns; 5.2x no longer does. Harmless here.
@pytest.mark.filterwarnings("ignore:You are calling .generate.. with the `input_ids`:UserWarning")
@torch.no_grad()
def test_pruning_works_with_offloaded_weights() -> None:
    tiny = BUILDERS["qwen2_5_vl"](layers=6)
    reference = copy.deepcopy(tiny.model)
    inputs = tiny.prompt(SAMPLES[:1])
    model = accelerate.cpu_offload(tiny.model, execution_device=torch.device("cpu"))
    with halfv.apply(model) as handle:
        tokens, logits = greedy(model, inputs)
        kept = handle.stats.kept_positions if handle.stats else None
    with halfv.apply(reference) as handle:
        ref_tokens, ref_logits = greedy(reference, inputs)
        assert kept == (handle.stats.kept_positions if handle.stats else None)
    assert torch.equal(tokens, ref_tokens)
    torch.testing.assert_close(logits, ref_logits, rtol=0, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_split_between_cuda_and_cpu(family: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Layers 0-2 and the embeddings run on cuda:0, layers 3-5 and the head on the CPU
    (a head tied to the embeddings stays with them on cuda:0).

    The vision tower stays on the CPU, so both models see the same visual features; with
    TF32 off, the float32 layers on the GPU match the CPU to ~1e-6, far below the gaps
    between relevance scores, so the same tokens are kept.
    """
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    tiny = BUILDERS[family](layers=6)
    reference = copy.deepcopy(tiny.model)
    inputs = tiny.prompt(SAMPLES)
    dmap = device_map(tiny.model, lambda i: 0 if i < 3 else "cpu")
    dmap["model.language_model.embed_tokens"] = 0
    if tiny.model.lm_head.weight is tiny.model.get_input_embeddings().weight:
        # tied head (the tiny InternVL): one tensor cannot live on two devices, and
        # accelerate would keep it with the head on the CPU while the embedding hook
        # sends the ids to cuda:0
        dmap["lm_head"] = 0
    # main_device="cpu": the "cpu" parts run on the CPU (with a GPU main device accelerate
    # would offload them to CPU memory and run them on the GPU)
    model = accelerate.dispatch_model(tiny.model, device_map=dmap, main_device="cpu")
    assert {p.device.type for p in model.parameters()} == {"cuda", "cpu"}
    assert model.model.language_model.layers[0].self_attn.q_proj.weight.is_cuda
    with halfv.apply(model) as handle:
        tokens, logits = greedy(model, inputs)
        kept = handle.stats.kept_positions if handle.stats else None
    with halfv.apply(reference) as handle:
        ref_tokens, ref_logits = greedy(reference, inputs)
        assert kept == (handle.stats.kept_positions if handle.stats else None)
    assert torch.equal(tokens.cpu(), ref_tokens)
    torch.testing.assert_close(logits, ref_logits, rtol=0, atol=1e-4)
