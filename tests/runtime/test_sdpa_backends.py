"""Pruned decode steps on CUDA run SDPA without cuDNN; everything else keeps its backends."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

import halfv
import halfv.runtime.calls
from halfv.runtime.sdpa_backends import decode_backends_without_cudnn
from tiny import build_qwen

CUDA = torch.device("cuda")  # a device object needs no GPU; the flags are global
FAST = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def _flags() -> tuple[bool, bool, bool, bool]:
    cuda: Any = torch.backends.cuda
    return (
        cuda.cudnn_sdp_enabled(),
        cuda.flash_sdp_enabled(),
        cuda.mem_efficient_sdp_enabled(),
        cuda.math_sdp_enabled(),
    )


def test_turns_only_cudnn_off_and_restores_it() -> None:
    with sdpa_kernel([*FAST, SDPBackend.CUDNN_ATTENTION]):
        before = _flags()
        context = decode_backends_without_cudnn(CUDA)
        assert context is not None
        with context:
            assert _flags() == (False, True, True, True)
        assert _flags() == before


@pytest.mark.parametrize(
    "enabled",
    [
        [SDPBackend.FLASH_ATTENTION, SDPBackend.MATH],  # cuDNN off already
        [SDPBackend.CUDNN_ATTENTION, SDPBackend.MATH],  # no flash or efficient kernel left
    ],
    ids=["cudnn-off", "no-fast-backend"],
)
def test_leaves_the_backends_alone_where_switching_helps_nothing(
    enabled: list[SDPBackend],
) -> None:
    with sdpa_kernel(enabled):
        assert decode_backends_without_cudnn(CUDA) is None


def test_leaves_cpu_alone() -> None:
    assert decode_backends_without_cudnn(torch.device("cpu")) is None


class _Recorder:
    """Stands in for decode_backends_without_cudnn: counts entries and exits."""

    def __init__(self) -> None:
        self.entered = 0
        self.exited = 0

    def __call__(self, device: torch.device) -> AbstractContextManager[None]:
        @contextmanager
        def step() -> Iterator[None]:
            self.entered += 1
            try:
                yield
            finally:
                self.exited += 1

        return step()


@pytest.mark.parametrize(
    ("keep", "switch_on", "expect_steps"),
    [(0.5, True, True), (1.0, True, False), (0.5, False, False)],
    ids=["pruned", "keep-1.0", "switched-off"],
)
def test_runtime_wraps_each_pruned_decode_step(
    monkeypatch: pytest.MonkeyPatch, keep: float, switch_on: bool, expect_steps: bool
) -> None:
    recorder = _Recorder()
    monkeypatch.setattr(halfv.runtime.calls, "decode_backends_without_cudnn", recorder)
    tiny = build_qwen(layers=4)
    inputs = tiny.prompt([[5, "img", 7]])
    config = halfv.PruningConfig(ivr_layer=1, ivr_keep=keep, ssr_layer=None)
    new_tokens = 4
    with halfv.apply(tiny.model, config) as handle:
        handle.decode_without_cudnn = switch_on
        tiny.model.generate(
            **inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False
        )
        decode_steps = handle.decode_steps
    assert recorder.entered == recorder.exited  # every step's context is closed
    assert decode_steps == new_tokens - 1  # the pruned decode path ran, keep 1.0 included
    if expect_steps:
        assert recorder.entered == decode_steps  # decode steps only, not the prefill
    else:
        assert recorder.entered == 0


@pytest.mark.gpu
def test_cuda_decode_runs_without_cudnn_and_prefill_keeps_it() -> None:
    tiny = build_qwen(layers=4)
    model = tiny.model.to("cuda")
    inputs = {k: v.to("cuda") for k, v in tiny.prompt([[5, "img", 7]]).items()}
    seen: list[tuple[int, bool]] = []

    def record(_module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        seen.append((int(hidden.shape[1]), _flags()[0]))

    layer = halfv.get_adapter_for(model).decoder_layers(model)[-1]
    hook = layer.register_forward_pre_hook(record, with_kwargs=True)
    config = halfv.PruningConfig(ivr_layer=1, ivr_keep=0.5, ssr_layer=None)
    try:
        with sdpa_kernel([*FAST, SDPBackend.CUDNN_ATTENTION]), halfv.apply(model, config):
            model.generate(**inputs, max_new_tokens=3, min_new_tokens=3, do_sample=False)
            assert _flags()[0]  # restored after the last step
    finally:
        hook.remove()
    (prefill_rows, prefill_cudnn), *decode = seen
    assert prefill_rows > 1
    assert prefill_cudnn  # prefills keep the user's backends
    assert len(decode) == 2
    assert all(rows == 1 and not cudnn for rows, cudnn in decode)
