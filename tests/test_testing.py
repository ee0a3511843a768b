"""halfv.testing: the published contract checks pass on good components, fail on bad ones."""

from __future__ import annotations

import subprocess
import sys
from typing import Any, ClassVar

import pytest
import torch
from torch import Tensor

import halfv
from halfv.errors import HalfvTypeError
from halfv.interfaces import IVRPolicy, SSRPolicy
from halfv.policies import BUILTIN_IVR_POLICIES, BUILTIN_SSR_POLICIES
from halfv.testing import check_adapter, check_ivr_policy, check_ssr_policy


@pytest.mark.parametrize("cls", BUILTIN_IVR_POLICIES, ids=lambda c: c.name)
def test_builtin_ivr_policies_pass(cls: type[IVRPolicy]) -> None:
    check_ivr_policy(cls(), max_examples=15)


@pytest.mark.parametrize("cls", BUILTIN_SSR_POLICIES, ids=lambda c: c.name)
def test_builtin_ssr_policies_pass(cls: type[SSRPolicy]) -> None:
    check_ssr_policy(cls(), max_examples=15)


class Duplicates(IVRPolicy):
    """Keeps token 0 ``keep`` times: breaks 'distinct indices'."""

    name: ClassVar[str] = "duplicates"
    needs_features: ClassVar[bool] = False

    def _choose(self, scores: Tensor, features: Tensor | None, keep: int) -> Tensor:
        return scores.new_zeros(scores.shape[0], keep, dtype=torch.int64)


class BatchDependent(IVRPolicy):
    """Picks by the batch's first row: a sample alone gets different indices."""

    name: ClassVar[str] = "batch-dependent"
    needs_features: ClassVar[bool] = False

    def _choose(self, scores: Tensor, features: Tensor | None, keep: int) -> Tensor:
        return scores[:1].topk(keep, dim=-1).indices.expand(scores.shape[0], keep)


class LyingFreeze(SSRPolicy):
    """Says 'freeze' but selects."""

    name: ClassVar[str] = "lying-freeze"
    mode: ClassVar[Any] = "freeze"

    def _choose(self, scores: Tensor, features: Tensor | None, keep: int) -> Tensor:
        return scores.topk(keep, dim=-1).indices


def test_broken_policies_fail() -> None:
    with pytest.raises(AssertionError, match="strictly increasing"):
        check_ivr_policy(Duplicates(), max_examples=30)
    with pytest.raises(AssertionError, match="alone differs from the batch"):
        check_ivr_policy(BatchDependent(), max_examples=30)
    with pytest.raises(AssertionError, match="did not raise"):
        check_ssr_policy(LyingFreeze())
    with pytest.raises(HalfvTypeError, match="expected a IVRPolicy instance"):
        check_ivr_policy(Duplicates)  # type: ignore[arg-type]


def test_adapters_pass_and_a_broken_one_fails() -> None:
    for info in halfv.list_components("adapter"):
        check_adapter(info.obj)
    broken = type(halfv.get_adapter("llava"))()
    broken.saturation_detector = None  # type: ignore[assignment]
    with pytest.raises(AssertionError, match=r"halfv would refuse adapter .*saturation_detector"):
        check_adapter(broken)


def test_import_without_hypothesis_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['hypothesis'] = None\n"
        "try:\n    import halfv.testing\n"
        "except ModuleNotFoundError as e:\n    print(type(e).__name__, e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert "MissingDependencyError" in out
    assert "pip install 'halfv[testing]'" in out
