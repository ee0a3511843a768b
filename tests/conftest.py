"""Shared test configuration: hypothesis profiles, torch threads and seeding, marker skips.

Hypothesis profiles (pick one with ``HALFV_HYPOTHESIS_PROFILE``, default ``dev``):

* ``dev`` -- 30 examples per property, no deadline: quick local runs.
* ``ci`` -- 100 examples per property, no deadline, ``too_slow`` health check off, and
  derandomized: the examples are a fixed function of each test, so a CI verdict can be
  reproduced and never flips at random (``dev`` keeps searching new examples locally;
  a counter-example it finds gets pinned with ``@example``). Used by ``.ci/run``.

``HALFV_MIN_GAIN=off`` is set for the whole run (the per-call cost gate never skips a
stage), so every test prunes whatever its config says; tests of the gate unset it.

Markers: ``gpu`` tests are skipped when CUDA is unavailable; ``plugin`` tests are skipped
when the example plugin (``./plugins/halfv-example``) is not installed; ``lmms_eval`` tests
are skipped when the lmms-eval plugin (``./integrations/halfv-lmms-eval``) is not installed.
"""

from __future__ import annotations

import importlib.metadata
import os
import random

import pytest
import torch
from hypothesis import HealthCheck, settings

TORCH_THREADS = 2

# The cost gate (PruningConfig.min_gain) would run the tiny test models unpruned (their
# stages cannot pay on a CPU); exactness tests must prune. Gate tests unset it themselves.
os.environ["HALFV_MIN_GAIN"] = "off"
EXAMPLE_PLUGIN_DIST = "halfv-example"
LMMS_EVAL_PLUGIN_DIST = "halfv-lmms-eval"

settings.register_profile("dev", max_examples=30, deadline=None)
settings.register_profile(
    "ci",
    max_examples=100,
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HALFV_HYPOTHESIS_PROFILE", "dev"))


def pytest_configure(config: pytest.Config) -> None:
    # CI machines have 2 cores; more intra-op threads only oversubscribe them.
    torch.set_num_threads(TORCH_THREADS)


def _installed(dist: str) -> bool:
    try:
        importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False)")
    skip_plugin = pytest.mark.skip(
        reason=f"needs the example plugin: pip install ./plugins/{EXAMPLE_PLUGIN_DIST}"
    )
    has_cuda = torch.cuda.is_available()
    skip_lmms = pytest.mark.skip(
        reason=f"needs the lmms-eval plugin: see docs/lmms-eval.md ({LMMS_EVAL_PLUGIN_DIST})"
    )
    has_plugin = _installed(EXAMPLE_PLUGIN_DIST)
    has_lmms = _installed(LMMS_EVAL_PLUGIN_DIST)
    for item in items:
        if item.get_closest_marker("gpu") and not has_cuda:
            item.add_marker(skip_gpu)
        if item.get_closest_marker("plugin") and not has_plugin:
            item.add_marker(skip_plugin)
        if item.get_closest_marker("lmms_eval") and not has_lmms:
            item.add_marker(skip_lmms)


@pytest.fixture
def torch_seed() -> int:
    """Seed torch (and ``random``) with a fixed value and return it."""
    seed = 0
    torch.manual_seed(seed)
    random.seed(seed)
    return seed
