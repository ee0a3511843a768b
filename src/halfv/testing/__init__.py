"""Contract checks for authors of halfv components (policies and adapters).

Adapter authors also get :func:`check_backbone` (:mod:`halfv.testing.backbone`): keep-1.0
exactness, pruned and frozen prefills against an independent masked reference built from
the model's own layers (:mod:`halfv.testing.reference`), relevance against the model's
own attention, and cached decode against recompute, on a tiny model of their family.

Run them from your own test-suite::

    from halfv.testing import check_adapter, check_ivr_policy, check_ssr_policy

    def test_my_policy_keeps_the_contract() -> None:
        check_ivr_policy(MyPolicy())

The policy checks are property tests: hypothesis draws batches of scores, features and
budgets (:func:`selection_inputs`) and each check asserts what halfv's runtime relies on --
``[B, keep]`` int64 indices, strictly increasing, in range, deterministic, the same for a
sample alone as inside a batch, and ``arange(N)`` when ``keep == N``. hypothesis is an
optional dependency: install ``halfv[testing]``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from halfv.errors import MissingDependencyError

try:
    from hypothesis import given, settings
    from hypothesis import strategies as st
except ModuleNotFoundError as exc:  # pragma: no cover -- exercised in a subprocess test
    msg = "halfv.testing needs hypothesis: pip install 'halfv[testing]'"
    raise MissingDependencyError(msg, name="hypothesis") from exc

from halfv.interfaces import BackboneAdapter, IVRPolicy, SSRPolicy
from halfv.plugins.registry import AdapterRegistry
from halfv.testing.backbone import (
    check_backbone,
    check_cached_decode,
    check_keep_all_exact,
    check_pruned_prefill,
    check_relevance_follows_attention,
)
from halfv.testing.reference import ReferenceOutput, attention_topk, masked_reference

__all__ = [
    "ReferenceOutput",
    "SelectionInputs",
    "attention_topk",
    "check_adapter",
    "check_backbone",
    "check_cached_decode",
    "check_ivr_policy",
    "check_keep_all_exact",
    "check_pruned_prefill",
    "check_relevance_follows_attention",
    "check_ssr_policy",
    "masked_reference",
    "selection_inputs",
]

#: (scores [B, N], features [B, N, D], keep)
SelectionInputs = tuple[Tensor, Tensor, int]


@st.composite
def selection_inputs(
    draw: st.DrawFn,
    *,
    max_batch: int = 3,
    max_tokens: int = 64,
    max_dim: int = 16,
    min_tokens: int = 1,
    dtype: torch.dtype = torch.float32,
    tied_scores: bool | None = False,
) -> SelectionInputs:
    """Draw ``(scores [B, N], features [B, N, D], keep)`` for a selection call.

    ``B`` is in ``[1, max_batch]``, ``N`` in ``[min_tokens, max_tokens]``, ``D`` in
    ``[1, max_dim]`` and ``keep`` in ``[1, N]``. Tensors come from one drawn seed through a
    ``torch.Generator`` (fast to generate, meaningful to shrink). Features are standard
    normal; scores too, or small integers in ``[0, 3]`` with ``tied_scores=True`` (many
    ties); ``tied_scores=None`` lets hypothesis choose.
    """
    batch = draw(st.integers(1, max_batch), label="B")
    n = draw(st.integers(min_tokens, max_tokens), label="N")
    dim = draw(st.integers(1, max_dim), label="D")
    keep = draw(st.integers(1, n), label="keep")
    ties = draw(st.booleans(), label="tied_scores") if tied_scores is None else tied_scores
    seed = draw(st.integers(0, 2**32 - 1), label="seed")
    generator = torch.Generator().manual_seed(seed)
    if ties:
        scores = torch.randint(0, 4, (batch, n), generator=generator).to(dtype)
    else:
        scores = torch.randn((batch, n), generator=generator, dtype=torch.float64).to(dtype)
    features = torch.randn((batch, n, dim), generator=generator, dtype=torch.float64).to(dtype)
    return scores, features, keep


def _features(policy: IVRPolicy | SSRPolicy, features: Tensor) -> Tensor | None:
    return features if policy.needs_features else None


def _check_selection(policy: IVRPolicy | SSRPolicy, inputs: SelectionInputs) -> None:
    scores, features, keep = inputs
    batch, n = scores.shape
    label = f"policy {policy.name!r}"
    out = policy.select(scores, _features(policy, features), keep)
    assert out.shape == (batch, keep), f"{label} returned shape {tuple(out.shape)}"
    assert out.dtype == torch.int64, f"{label} returned dtype {out.dtype}, not int64"
    assert bool((out[:, 1:] > out[:, :-1]).all()), f"{label}: indices not strictly increasing"
    assert int(out.min()) >= 0, f"{label}: negative index"
    assert int(out.max()) < n, f"{label}: index >= N={n}"
    again = policy.select(scores, _features(policy, features), keep)
    assert torch.equal(again, out), f"{label} is not deterministic"
    for b in range(batch):
        alone = policy.select(scores[b], _features(policy, features[b]), keep)
        assert torch.equal(alone, out[b]), f"{label}: sample {b} alone differs from the batch"
    full = policy.select(scores, _features(policy, features), n)
    assert full.tolist() == [list(range(n))] * batch, f"{label}: keep == N is not arange(N)"


def _run(policy: IVRPolicy | SSRPolicy, max_examples: int, inputs: Any) -> None:
    @settings(max_examples=max_examples, deadline=None, database=None)
    @given(inputs)
    def check(drawn: SelectionInputs) -> None:
        _check_selection(policy, drawn)

    check()


def check_ivr_policy(policy: IVRPolicy, *, max_examples: int = 50) -> None:
    """Assert that ``policy`` keeps the :class:`~halfv.IVRPolicy` contract (property test).

    Raises:
        AssertionError: a drawn input breaks the contract; hypothesis reports the
            smallest one it found.
        HalfvTypeError: ``policy`` is not an ``IVRPolicy`` instance.
    """
    _require(policy, IVRPolicy)
    _run(policy, max_examples, selection_inputs(tied_scores=None))


def check_ssr_policy(policy: SSRPolicy, *, max_examples: int = 50) -> None:
    """Assert that ``policy`` keeps the :class:`~halfv.SSRPolicy` contract.

    A ``"prune"`` policy is property-tested like an IVR policy; a ``"freeze"`` or
    ``"none"`` policy must refuse :meth:`~halfv.SSRPolicy.select` with
    ``NotImplementedError``, as the runtime never asks it to select.
    """
    _require(policy, SSRPolicy)
    mode = getattr(policy, "mode", None)
    assert mode in {"prune", "freeze", "none"}, f"SSR policy {policy.name!r} has mode={mode!r}"
    if mode == "prune":
        _run(policy, max_examples, selection_inputs(tied_scores=None))
        return
    try:
        policy.select(torch.zeros(1, 4), torch.zeros(1, 4, 2), 2)
    except NotImplementedError:
        return
    msg = f"SSR policy {policy.name!r} has mode {mode!r} but select() did not raise"
    raise AssertionError(msg)


def check_adapter(adapter: BackboneAdapter) -> None:
    """Assert that ``adapter`` would be accepted by halfv's registry, and that its
    ``reference_schedule`` (when it has one) fits its ``reference_layers``.

    Raises:
        AssertionError: the registry refuses the adapter (the message says why and how to
            fix it), or the reference schedule does not fit.
    """
    _require(adapter, BackboneAdapter)
    try:
        AdapterRegistry().register(adapter, plugin="halfv.testing")
    except (TypeError, ValueError) as exc:
        msg = f"halfv would refuse adapter {adapter!r}: {exc}"
        raise AssertionError(msg) from exc
    schedule = getattr(adapter, "reference_schedule", None)
    layers = getattr(adapter, "reference_layers", None)
    if schedule is not None and isinstance(layers, int):
        try:
            schedule.check_depth(layers)
        except ValueError as exc:
            msg = f"adapter {adapter.name!r}: reference_schedule does not fit: {exc}"
            raise AssertionError(msg) from exc


def _require(obj: object, base: type) -> None:
    from halfv.errors import HalfvTypeError

    if not isinstance(obj, base):
        msg = f"expected a {base.__qualname__} instance, got {obj!r}; pass an instance"
        raise HalfvTypeError(msg)
