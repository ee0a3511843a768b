"""pytest plugin: attach halfv to every model transformers' tests build (issue #18).

Loaded with ``-p conftest_halfv`` from the folder ``prepare.py`` lays out. The schedule is
chosen by ``HALFV_SCHEDULE``:

* ``none`` (default): nothing is attached; the baseline run.
* ``keep1``: the adapter's default layers at keep 1.0 (``ivr_keep=1.0``; an SSR stage, if
  the depth has one, as ``prune`` at ``ssr_keep=1.0``): every hook runs, nothing is
  removed, and outputs must equal the untouched model's.
* ``default``: the adapter's default schedule scaled to the model's depth
  (``halfv.adapters.base.scale_schedule``), as ``halfv.apply(model)`` picks it.

``PreTrainedModel.post_init`` (the last step of every model's ``__init__``) is wrapped.
A model whose ``config.model_type`` halfv supports gets ``halfv.apply``; when an outer
model of a supported type is built around it (``LlavaForConditionalGeneration`` around
``LlavaModel``), the inner one's handle is removed and the outer one is applied, so each
model a test builds carries exactly one schedule, on its outermost supported module. An
error raised by ``halfv.apply`` propagates: it fails the test that built the model.
Nothing is removed after a test: each test builds its own models.

Each test's junit record carries ``halfv_attached`` (the models it attached to) and
``halfv_schedule``.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

SCHEDULE = os.environ.get("HALFV_SCHEDULE", "none")
SUPPORTED = ("llava", "llava_next", "qwen2_5_vl", "internvl")
_attached: list[str] = []


def _config_for(model: Any) -> Any:
    import halfv

    adapter = halfv.get_adapter(model.config.model_type)
    config = adapter.default_config(model)
    if SCHEDULE == "default":
        return config
    update: dict[str, Any] = {"ivr_keep": 1.0, "ssr_keep": 1.0}
    if config.ssr_layer is not None and config.ssr_mode != "none":
        update["ssr_mode"] = "prune"
    return halfv.PruningConfig.model_validate({**config.model_dump(), **update})


def _install() -> None:
    import halfv
    from transformers import PreTrainedModel

    original = PreTrainedModel.post_init

    def post_init(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)
        if getattr(getattr(self, "config", None), "model_type", None) not in SUPPORTED:
            return result
        for name, sub in self.named_modules():
            if sub is self:
                continue
            inner = halfv.handle_of(sub)
            if inner is not None:
                inner.remove()
                if type(sub).__name__ in _attached:
                    _attached.remove(type(sub).__name__)
        if halfv.handle_of(self) is not None:
            return result  # post_init called again on a built model (resize tests)
        halfv.apply(self, _config_for(self))
        _attached.append(type(self).__name__)
        return result

    post_init.__wrapped__ = original  # type: ignore[attr-defined]
    PreTrainedModel.post_init = post_init  # type: ignore[method-assign]


def pytest_configure(config: pytest.Config) -> None:
    if SCHEDULE not in ("none", "keep1", "default"):
        raise pytest.UsageError(f"HALFV_SCHEDULE={SCHEDULE!r}: use none, keep1 or default")
    import torch

    torch.set_num_threads(int(os.environ.get("HALFV_TORCH_THREADS", "2")))
    if SCHEDULE != "none":
        _install()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    _attached.clear()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    yield
    if call.when == "call" or (call.when == "setup" and call.excinfo is not None):
        item.user_properties.append(("halfv_schedule", SCHEDULE))
        item.user_properties.append(("halfv_attached", ",".join(sorted(set(_attached)))))
