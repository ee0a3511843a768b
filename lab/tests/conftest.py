"""Configuration of the lab's tests: the library's test helpers, torch threads.

The lab's tests reuse the library's tiny-model builders (``tests/tiny.py``) and its
benchmark-script loader (``tests/benchmark_scripts.py``), so ``tests/`` is put on
``sys.path``; the library's tests never import the lab.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

CORE_TESTS = Path(__file__).resolve().parents[2] / "tests"
TORCH_THREADS = 2

# As in tests/conftest.py: the per-call cost gate never skips a stage in the tests.
os.environ["HALFV_MIN_GAIN"] = "off"

if str(CORE_TESTS) not in sys.path:
    sys.path.insert(0, str(CORE_TESTS))


def pytest_configure(config: pytest.Config) -> None:
    # CI machines have 2 cores; more intra-op threads only oversubscribe them.
    torch.set_num_threads(TORCH_THREADS)
