"""Tests of the built-in IVR and SSR policies and their plugin hooks."""

from __future__ import annotations

from typing import Any

import pluggy
import pytest
import torch
from hypothesis import given
from pydantic import ValidationError
from torch import Tensor

import halfv.plugins.hookspecs
import halfv.policies
from halfv.interfaces import IVRPolicy, SSRPolicy
from halfv.ops.selection import uniform_indices
from halfv.policies import (
    BUILTIN_IVR_POLICIES,
    BUILTIN_SSR_POLICIES,
    AttentionPolicy,
    DiversityPolicy,
    Freeze,
    HalfVPolicy,
    NoSSR,
    RandomPolicy,
    TopKPrune,
    UniformPolicy,
    register_ivr_policies,
    register_ssr_policies,
)
from references import ref_fps, ref_topk
from strategies import selection_inputs


def _registered_ivr() -> list[type[IVRPolicy]]:
    found: list[type[IVRPolicy]] = []
    register_ivr_policies(found.append)
    return found


def _registered_ssr() -> list[type[SSRPolicy]]:
    found: list[type[SSRPolicy]] = []
    register_ssr_policies(found.append)
    return found


IVR_CLASSES = _registered_ivr()
IVR_INSTANCES: list[IVRPolicy] = [
    *(cls() for cls in IVR_CLASSES),
    HalfVPolicy(attention_share=0.0),
    HalfVPolicy(attention_share=0.5),
    HalfVPolicy(attention_share=1.0),
    HalfVPolicy(attention_share=0.1, grid_share=0.7),
    HalfVPolicy(attention_share=0.6, grid_share=0.6),
    RandomPolicy(seed=12345),
]


def _policy_id(policy: IVRPolicy) -> str:
    options = ",".join(f"{k}={v}" for k, v in policy.model_dump().items())
    return f"{policy.name}({options})"


def _args(policy: IVRPolicy, features: Tensor) -> Tensor | None:
    return features if policy.needs_features else None


# --------------------------------------------------------------------------- registry
def test_hooks_register_every_builtin() -> None:
    assert list(BUILTIN_IVR_POLICIES) == IVR_CLASSES
    assert [c.name for c in IVR_CLASSES] == ["halfv", "attention", "diversity", "random", "uniform"]
    assert _registered_ssr() == list(BUILTIN_SSR_POLICIES)
    assert [(c.name, c.mode) for c in _registered_ssr()] == [
        ("prune", "prune"),
        ("freeze", "freeze"),
        ("none", "none"),
    ]


def test_hooks_work_through_pluggy() -> None:
    pm = pluggy.PluginManager(halfv.plugins.hookspecs.PROJECT_NAME)
    pm.add_hookspecs(halfv.plugins.hookspecs)
    pm.register(halfv.policies)
    pm.check_pending()
    ivr: list[type[IVRPolicy]] = []
    ssr: list[type[SSRPolicy]] = []
    pm.hook.register_ivr_policies(register=ivr.append)
    pm.hook.register_ssr_policies(register=ssr.append)
    assert ivr == list(BUILTIN_IVR_POLICIES)
    assert ssr == list(BUILTIN_SSR_POLICIES)


@pytest.mark.parametrize(
    ("cls", "needs_scores", "needs_features"),
    [
        (HalfVPolicy, True, True),
        (AttentionPolicy, True, False),
        (DiversityPolicy, False, True),
        (RandomPolicy, False, False),
        (UniformPolicy, False, False),
        (TopKPrune, True, False),
        (Freeze, False, False),
        (NoSSR, False, False),
    ],
)
def test_needs_flags(
    cls: type[IVRPolicy | SSRPolicy], needs_scores: bool, needs_features: bool
) -> None:
    assert (cls.needs_scores, cls.needs_features) == (needs_scores, needs_features)


# --------------------------------------------------------------------------- IVR contract
@pytest.mark.parametrize("policy", IVR_INSTANCES, ids=_policy_id)
@given(inputs=selection_inputs(tied_scores=None))
def test_ivr_contract(policy: IVRPolicy, inputs: tuple[Tensor, Tensor, int]) -> None:
    scores, features, keep = inputs
    batch, n = scores.shape
    out = policy.select(scores, _args(policy, features), keep)
    assert out.shape == (batch, keep)
    assert out.dtype == torch.int64
    assert bool((out[:, 1:] > out[:, :-1]).all()), "indices must be strictly increasing"
    assert int(out.min()) >= 0
    assert int(out.max()) < n
    assert torch.equal(policy.select(scores, _args(policy, features), keep), out)
    assert torch.equal(policy.select(scores, features, keep), out)  # unused features ignored
    for b in range(batch):  # per-sample and 1-D input
        alone = policy.select(scores[b], _args(policy, features[b]), keep)
        assert alone.shape == (keep,)
        assert torch.equal(alone, out[b])


@pytest.mark.parametrize("policy", IVR_INSTANCES, ids=_policy_id)
def test_ivr_keep_all_is_arange(policy: IVRPolicy) -> None:
    scores, features = torch.randn(2, 7), torch.randn(2, 7, 3)
    out = policy.select(scores, _args(policy, features), 7)
    assert out.tolist() == [list(range(7))] * 2
    assert policy.select(scores[0], _args(policy, features[0]), 7).tolist() == list(range(7))


@pytest.mark.parametrize("policy", IVR_INSTANCES, ids=_policy_id)
@pytest.mark.parametrize("keep", [0, 9, True, 2.5])
def test_ivr_rejects_bad_keep(policy: IVRPolicy, keep: Any) -> None:
    with pytest.raises(ValueError, match=r"keep=.* must be an int in \[1, N=8\].*kept_count"):
        policy.select(torch.zeros(2, 8), torch.randn(2, 8, 3), keep)


@pytest.mark.parametrize("policy", IVR_INSTANCES, ids=_policy_id)
def test_ivr_rejects_bad_shapes(policy: IVRPolicy) -> None:
    with pytest.raises(ValueError, match=r"scores must have shape \[B, N\]"):
        policy.select(torch.zeros(2, 3, 4), torch.randn(2, 3, 4), 1)
    with pytest.raises(ValueError, match=r"features must have shape \[B, N, D\]"):
        policy.select(torch.zeros(2, 8), torch.randn(2, 7, 3), 1)


@pytest.mark.parametrize("cls", [HalfVPolicy, DiversityPolicy])
def test_feature_policies_refuse_missing_features(cls: type[IVRPolicy]) -> None:
    with pytest.raises(ValueError, match=f"policy '{cls.name}' needs features"):
        cls().select(torch.zeros(1, 5), None, 2)


@pytest.mark.parametrize("cls", IVR_CLASSES)
def test_ivr_options_are_validated(cls: type[IVRPolicy]) -> None:
    with pytest.raises(ValidationError, match="bogus\n  Extra inputs are not permitted"):
        cls(bogus=1)
    policy = cls()
    for field in type(policy).model_fields:
        with pytest.raises(ValidationError, match="frozen"):
            setattr(policy, field, getattr(policy, field))


# --------------------------------------------------------------------------- HalfV
@pytest.mark.parametrize("field", ["attention_share", "grid_share"])
@pytest.mark.parametrize("share", [1.5, -0.1])
def test_halfv_share_ranges(field: str, share: float) -> None:
    with pytest.raises(ValidationError) as info:
        HalfVPolicy(**{field: share})
    text = str(info.value)
    assert field in text
    assert f"input_value={share}" in text
    expected = "less than or equal to 1" if share > 1 else "greater than or equal to 0"
    assert expected in text


@given(selection_inputs(max_tokens=40, dtype=torch.float64, tied_scores=None))
def test_halfv_policy_matches_reference(inputs: tuple[Tensor, Tensor, int]) -> None:
    scores, features, keep = inputs
    policy = HalfVPolicy(attention_share=0.3)
    out = policy.select(scores, features, keep)
    n_anchors = int(keep * 0.3 + 1e-9)
    for b in range(scores.shape[0]):
        anchors = ref_topk(scores[b], n_anchors)
        assert set(anchors) <= set(out[b].tolist())
        assert out[b].tolist() == sorted(ref_fps(features[b], keep, anchors))


@given(selection_inputs(tied_scores=None))
def test_halfv_extremes_equal_baselines(inputs: tuple[Tensor, Tensor, int]) -> None:
    scores, features, keep = inputs
    assert torch.equal(
        HalfVPolicy(attention_share=0.0).select(scores, features, keep),
        DiversityPolicy().select(scores, features, keep),
    )
    assert torch.equal(
        HalfVPolicy(attention_share=1.0).select(scores, features, keep),
        AttentionPolicy().select(scores, None, keep),
    )


@given(selection_inputs(tied_scores=None))
def test_halfv_all_grid_is_the_uniform_baseline(inputs: tuple[Tensor, Tensor, int]) -> None:
    scores, features, keep = inputs
    assert torch.equal(
        HalfVPolicy(attention_share=0.0, grid_share=1.0).select(scores, features, keep),
        UniformPolicy().select(scores, None, keep),
    )


# --------------------------------------------------------------------------- baselines
@given(selection_inputs(tied_scores=None))
def test_attention_is_sorted_topk(inputs: tuple[Tensor, Tensor, int]) -> None:
    scores, _, keep = inputs
    out = AttentionPolicy().select(scores, None, keep)
    for b in range(scores.shape[0]):
        assert out[b].tolist() == sorted(ref_topk(scores[b], keep))


def test_diversity_starts_at_index_zero() -> None:
    features = torch.randn(3, 20, 4, generator=torch.Generator().manual_seed(9))
    out = DiversityPolicy().select(torch.zeros(3, 20), features, 5)
    assert out[:, 0].tolist() == [0, 0, 0]


def test_random_policy_depends_only_on_seed_n_keep() -> None:
    scores = torch.randn(4, 64)
    out = RandomPolicy(seed=3).select(scores, None, 12)
    assert all(torch.equal(out[0], row) for row in out)
    assert torch.equal(RandomPolicy(seed=3).select(torch.zeros(1, 64), None, 12)[0], out[0])
    assert not torch.equal(RandomPolicy(seed=4).select(scores, None, 12), out)
    bigger = RandomPolicy(seed=3).select(scores, None, 30)
    assert set(out[0].tolist()) <= set(bigger[0].tolist())


@pytest.mark.parametrize("seed", [-1, True, "3", 1.5])
def test_random_seed_is_validated(seed: Any) -> None:
    with pytest.raises(ValidationError, match="seed"):
        RandomPolicy(seed=seed)


def test_uniform_policy_is_strided() -> None:
    out = UniformPolicy().select(torch.zeros(2, 576), None, 144)
    expected = uniform_indices(576, 144)
    assert torch.equal(out[0], expected)
    assert torch.equal(out[1], expected)
    assert expected[:3].tolist() == [2, 6, 10]


# --------------------------------------------------------------------------- SSR
@given(selection_inputs(tied_scores=None))
def test_prune_is_sorted_topk(inputs: tuple[Tensor, Tensor, int]) -> None:
    scores, _, keep = inputs
    out = TopKPrune().select(scores, None, keep)
    for b in range(scores.shape[0]):
        assert out[b].tolist() == sorted(ref_topk(scores[b], keep))
        assert torch.equal(TopKPrune().select(scores[b], None, keep), out[b])


@pytest.mark.parametrize("cls", [Freeze, NoSSR])
@pytest.mark.parametrize("keep", [1, 4])
def test_non_selecting_ssr_refuses(cls: type[SSRPolicy], keep: int) -> None:
    policy = cls()
    match = f"SSR policy '{cls.name}' has mode '{cls.mode}' and does not select.*mode 'prune'"
    with pytest.raises(NotImplementedError, match=match):
        policy.select(torch.zeros(2, 4), None, keep)
    with pytest.raises(NotImplementedError, match=match):
        policy.select(torch.zeros(4), None, keep)


@pytest.mark.parametrize("cls", list(BUILTIN_SSR_POLICIES))
def test_ssr_options_are_validated(cls: type[SSRPolicy]) -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        cls(keep=0.05)
