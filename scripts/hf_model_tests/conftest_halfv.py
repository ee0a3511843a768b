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
``halfv_schedule``. With ``HALFV_RESULTS=<file>`` the plugin also writes one JSON line per
test: its id, outcome (passed / failed / skipped), the phase that failed, the exception's
class (``module.qualname``), whether that class is a ``halfv.errors`` class, the first line
of its message and the models halfv was attached to. ``run.py`` reads these lines.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

SCHEDULE = os.environ.get("HALFV_SCHEDULE", "none")
SUPPORTED = ("llava", "llava_next", "qwen2_5_vl", "internvl")
_attached: list[str] = []
_records: dict[str, dict[str, Any]] = {}


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
    from transformers import PreTrainedModel

    import halfv

    original = PreTrainedModel.post_init

    def post_init(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)
        if getattr(getattr(self, "config", None), "model_type", None) not in SUPPORTED:
            return result
        for sub in self.modules():
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


def pytest_configure(config: pytest.Config) -> None:  # noqa: ARG001 (pytest hook)
    if SCHEDULE not in ("none", "keep1", "default"):
        msg = f"HALFV_SCHEDULE={SCHEDULE!r}: use none, keep1 or default"
        raise pytest.UsageError(msg)
    import torch

    torch.set_num_threads(int(os.environ.get("HALFV_TORCH_THREADS", "2")))
    if SCHEDULE != "none":
        _install()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:  # noqa: ARG001 (pytest hook)
    _attached.clear()


def _where(excinfo: Any) -> str:
    """Where the exception was raised: the innermost frame outside Python's standard library
    (``unittest``'s assertion helpers are skipped), as ``tests/...`` for the tests' own code
    or the path inside its package (``torch/...``, ``transformers/...``, ``halfv/...``)."""
    stdlib = str(Path(os.__file__).parent)
    for entry in reversed(excinfo.traceback):
        path = str(entry.path)
        if path.startswith(stdlib) and "site-packages" not in path:
            continue
        for marker in ("/site-packages/", "/src/"):
            if marker in path:
                return path.rsplit(marker, 1)[1]
        return os.path.relpath(path)
    return ""


def _error(excinfo: Any) -> dict[str, Any]:
    exc = excinfo.value
    cls = type(exc)
    lines = str(exc).strip().splitlines()
    return {
        "error_type": f"{cls.__module__}.{cls.__qualname__}",
        "halfv_error": any(c.__module__.startswith("halfv") for c in cls.__mro__),
        "raised_in": _where(excinfo),
        "message": lines[0][:300] if lines else "",
    }


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    outcome = yield
    report = outcome.get_result()
    if call.when == "call" or (call.when == "setup" and call.excinfo is not None):
        item.user_properties.append(("halfv_schedule", SCHEDULE))
        item.user_properties.append(("halfv_attached", ",".join(sorted(set(_attached)))))
    record = _records.setdefault(item.nodeid, {"outcome": "passed"})
    if report.failed and record["outcome"] != "failed":
        record.update(outcome="failed", phase=call.when)
        if call.excinfo is not None:
            record.update(_error(call.excinfo))
    elif report.skipped and record["outcome"] == "passed":
        record["outcome"] = "skipped"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else ""
        record["message"] = str(reason)[:300]
    if call.when == "call":
        record["attached"] = sorted(set(_attached))
        record["duration_s"] = round(call.duration, 3)


def pytest_sessionfinish(session: pytest.Session) -> None:  # noqa: ARG001 (pytest hook)
    path = os.environ.get("HALFV_RESULTS")
    if not path:
        return
    with Path(path).open("w") as out:
        out.writelines(
            json.dumps({"test": nodeid, "schedule": SCHEDULE, **record}) + "\n"
            for nodeid, record in _records.items()
        )
