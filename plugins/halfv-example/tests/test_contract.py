"""The example adapter keeps halfv's adapter contract (halfv.testing, as a plugin author
would check their own component); the built-in SSR policy it relies on keeps its contract."""

from __future__ import annotations

import pytest

import halfv
from halfv.testing import check_adapter, check_ssr_policy

example = pytest.importorskip(
    "halfv_example", reason="needs the example plugin: pip install ./plugins/halfv-example"
)
VipLlavaAdapter = example.VipLlavaAdapter


def test_adapter_contract() -> None:
    check_adapter(VipLlavaAdapter())


def test_default_schedule_policies_keep_their_contract() -> None:
    schedule = VipLlavaAdapter.reference_schedule
    check_ssr_policy(halfv.get_ssr_policy(schedule.ssr_policy_name), max_examples=20)
