"""Config errors name the file, field, value and fix; ssr_policy, attention_share migration,
and FLOPs that read a (plugin) policy's own needs_scores / needs_features."""

from __future__ import annotations

import json
import types
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from torch import Tensor

import halfv
import halfv.plugins as hp
from halfv import cli
from halfv.config import PruningConfig, load_config
from halfv.errors import ConfigError, ConfigFileNotFoundError, ConfigTypeError, HalfvError
from halfv.flops import schedule_loads
from halfv.flops.model_specs import ModelDims
from halfv.interfaces import IVRPolicy, SSRPolicy
from halfv.ops.selection import uniform_indices
from halfv.plugins.hookspecs import hookimpl
from test_pipeline import ADAPTER, MODELS, _batch, _ids

TINY_DIMS = ModelDims("tiny", 32, 64, 4, 4, 2, 8, 64)


# ----------------------------------------------------------------------------- a plugin
class UnscoredIVR(IVRPolicy):
    """A plugin IVR policy that needs neither scores nor features (a stride)."""

    name: ClassVar[str] = "acme-stride"
    needs_scores: ClassVar[bool] = False
    needs_features: ClassVar[bool] = False

    def _choose(self, scores: Tensor, features: Tensor | None, keep: int) -> Tensor:
        return uniform_indices(scores.shape[1], keep, scores.device).expand(scores.shape[0], keep)


class AcmeSSR(SSRPolicy):
    """A plugin SSR prune that records each call (so a test can see it was used)."""

    name: ClassVar[str] = "acme-prune"
    mode: ClassVar[Any] = "prune"
    needs_scores: ClassVar[bool] = False
    needs_features: ClassVar[bool] = False
    calls: ClassVar[list[int]] = []

    def _choose(self, scores: Tensor, features: Tensor | None, keep: int) -> Tensor:
        AcmeSSR.calls.append(keep)
        return uniform_indices(scores.shape[1], keep, scores.device).expand(scores.shape[0], keep)


def _hook(*classes: type) -> Callable[[Callable[[type], None]], None]:
    def hook(register: Callable[[type], None]) -> None:
        for cls in classes:
            register(cls)

    return hook


@pytest.fixture
def acme() -> Iterator[None]:
    """The real components plus an 'acme' plugin with the two policies above."""
    plugin = types.ModuleType("acme_plugin")
    plugin.register_ivr_policies = hookimpl(_hook(UnscoredIVR))  # type: ignore[attr-defined]
    plugin.register_ivr_policies.__name__ = "register_ivr_policies"
    plugin.register_ssr_policies = hookimpl(_hook(AcmeSSR))  # type: ignore[attr-defined]
    plugin.register_ssr_policies.__name__ = "register_ssr_policies"
    hp.reset_components()
    assert hp.get_components().add_plugin(plugin, "acme", package="acme", version="1.0")
    assert not [f for f in hp.plugin_failures() if f.plugin == "acme"]
    AcmeSSR.calls.clear()
    yield
    hp.reset_components()


# ----------------------------------------------------------------------------- config errors
def test_apply_with_a_non_config_names_the_value_and_the_accepted_types() -> None:
    with pytest.raises(ConfigTypeError) as info:
        halfv.apply(MODELS["sdpa"], 5, adapter=ADAPTER)  # type: ignore[arg-type]
    text = str(info.value)
    assert "config=5 (int)" in text
    assert "a PruningConfig, a dict of its fields, a path to a .json or .toml file" in text
    assert isinstance(info.value, HalfvError)
    assert isinstance(info.value, TypeError)


def test_dict_config_error_names_field_value_and_bound() -> None:
    with pytest.raises(ConfigError, match=r"config dict: ivr_keep=1\.5: Input should be less"):
        halfv.apply(MODELS["sdpa"], {"ivr_keep": 1.5}, adapter=ADAPTER)


@pytest.mark.parametrize(
    ("name", "text", "match"),
    [
        ("bad.json", '{"ivr_layer": 2,', r"is not valid JSON: .* at line 1 column"),
        ("bad.toml", "ivr_layer = = 2", r"is not valid TOML: .*line 1"),
        ("list.json", "[1, 2]", r"holds a list .*not a table of PruningConfig fields"),
        ("range.toml", "ivr_keep = 2.0", r"ivr_keep=2\.0: Input should be less than or equal"),
        ("type.json", '{"ivr_layer": "two"}', r"ivr_layer='two': Input should be a valid integer"),
        ("key.json", '{"ivr_layers": 2}', r"unknown key 'ivr_layers' \(accepted: .*ivr_layer,"),
        ("suffix.yaml", "ivr_layer: 2", r"has suffix '\.yaml': use \.json or \.toml"),
    ],
)
def test_file_config_errors_name_the_file(tmp_path: Path, name: str, text: str, match: str) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=match) as info:
        load_config(path)
    assert str(info.value).startswith(f"config file {str(path)!r}")
    with pytest.raises(ConfigError, match=match):  # halfv.apply reports the same
        halfv.apply(MODELS["sdpa"], path, adapter=ADAPTER)


def test_non_utf8_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "latin1.json"
    path.write_bytes(b'{"ivr_policy": "caf\xe9"}')
    with pytest.raises(ConfigError, match=r"latin1\.json' is not UTF-8 text"):
        load_config(path)


def test_directory_and_missing_path_are_told_apart(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileNotFoundError, match=r"is a directory: pass the \.json or"):
        load_config(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config(tmp_path / "nope.toml")


# ----------------------------------------------------------------------------- attention_share
def test_top_level_attention_share_moves_into_the_policy_options() -> None:
    with pytest.warns(DeprecationWarning, match="moved into ivr_policy_options"):
        config = PruningConfig(attention_share=0.3)  # type: ignore[call-arg]
    assert config.ivr_policy_options == {"attention_share": 0.3}
    assert "attention_share" not in config.model_dump()
    assert PruningConfig.model_validate(config.model_dump()) == config  # round trip, silent
    with pytest.warns(DeprecationWarning, match="config.ivr_policy_options.get"):
        assert config.attention_share == 0.3
    with pytest.warns(DeprecationWarning, match="attention_share is deprecated"):
        assert PruningConfig().attention_share == 0.1  # HalfVPolicy's own default
    handle = halfv.apply(MODELS["sdpa"], config, adapter=ADAPTER)
    try:
        assert handle.pipeline.ivr_policy.attention_share == 0.3  # type: ignore[attr-defined]
    finally:
        handle.remove()


def test_attention_share_for_a_policy_without_it_is_ignored_as_before() -> None:
    with pytest.warns(DeprecationWarning, match="ignored: IVR policy 'uniform' has no such"):
        config = PruningConfig.model_validate({"ivr_policy": "uniform", "attention_share": 0.1})
    assert config.ivr_policy_options == {}


def test_attention_share_in_both_places_must_agree() -> None:
    data = {"attention_share": 0.1, "ivr_policy_options": {"attention_share": 0.4}}
    with pytest.raises(ValueError, match="contradicts ivr_policy_options"):
        PruningConfig.model_validate(data)
    with pytest.raises(ConfigError, match=r"config dict: .*contradicts ivr_policy_options"):
        halfv.apply(MODELS["sdpa"], data, adapter=ADAPTER)


def test_pipeline_resolves_no_estimator() -> None:
    config = PruningConfig(estimator="not-an-estimator")  # pruning never uses it
    pipeline = halfv.Pipeline.from_config(config, ADAPTER)
    assert pipeline.estimator is None


# ----------------------------------------------------------------------------- ssr_policy
@pytest.mark.usefixtures("acme")
def test_plugin_ssr_policy_chosen_by_name_from_a_toml_config(tmp_path: Path) -> None:
    path = tmp_path / "schedule.toml"
    path.write_text(
        "ivr_layer = 1\nivr_keep = 0.5\nssr_layer = 3\nssr_keep = 0.25\n"
        'ssr_policy = "acme-prune"\n',
        encoding="utf-8",
    )
    config = load_config(path)
    assert (config.ssr_policy, config.ssr_mode) == ("acme-prune", "prune")  # the policy's mode
    inputs = _batch([_ids(40, [(4, 16)], seed=1)])
    with halfv.apply(MODELS["sdpa"], path, adapter=ADAPTER) as handle, torch.no_grad():
        MODELS["sdpa"](**inputs)
        assert isinstance(handle.pipeline.ssr_policy, AcmeSSR)
        assert handle.ssr_mode == "prune"
        assert AcmeSSR.calls == [4]  # kept_count(16, 0.25)
        stats = handle.stats
    assert stats is not None
    assert len([p for p in stats.kept_positions[3][0] if 4 <= p < 20]) == 4


@pytest.mark.usefixtures("acme")
def test_ssr_policy_conflicts_are_config_errors() -> None:
    with pytest.raises(ValueError, match="ssr_mode='freeze' contradicts ssr_policy='acme-prune'"):
        PruningConfig(ivr_layer=1, ssr_layer=3, ssr_policy="acme-prune", ssr_mode="freeze")
    with pytest.raises(ValueError, match="ssr_mode='auto' lets the saturation detector"):
        PruningConfig(ivr_layer=1, ssr_layer=3, ssr_policy="acme-prune", ssr_mode="auto")
    with pytest.raises(ValueError, match="ssr_mode='prune' needs ssr_layer"):
        PruningConfig(ivr_layer=1, ssr_policy="acme-prune")
    with pytest.raises(halfv.UnknownComponentError, match="unknown SSR policy 'nope'"):
        PruningConfig(ivr_layer=1, ssr_layer=3, ssr_policy="nope")


def test_legacy_ssr_mode_still_selects_the_builtin_policy() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        config = PruningConfig(ivr_layer=1, ssr_layer=2, ssr_mode="freeze")
    assert (config.ssr_policy, config.ssr_policy_name) == (None, "freeze")
    assert PruningConfig(ssr_layer=3, ssr_mode="auto").ssr_policy_name == "prune"
    assert halfv.Pipeline.from_config(config, ADAPTER).ssr_policy.mode == "freeze"


# ----------------------------------------------------------------------------- FLOPs
@pytest.mark.usefixtures("acme")
def test_plugin_ivr_policy_without_scores_gets_no_relevance_flops(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plugin = PruningConfig(ivr_layer=1, ivr_keep=0.5, ivr_policy="acme-stride")
    loads = schedule_loads(4, plugin, 16, 8)
    assert sum(x.relevance_keys for x in loads) == 0
    assert sum(x.selection_pairs for x in loads) == 0
    scored = schedule_loads(4, plugin.model_copy(update={"ivr_policy": "attention"}), 16, 8)
    assert sum(x.relevance_keys for x in scored) == 16  # the lookup is not a constant 0

    def cli_exact(policy: str) -> float:
        path = tmp_path / f"{policy}.json"
        path.write_text(json.dumps({"ivr_layer": 2, "ivr_policy": policy}), encoding="utf-8")
        args = ["flops", "--model", "llava-1.5-7b", "--config", str(path), "--visual-tokens"]
        assert cli.main([*args, "576", "--json"]) == 0
        return float(json.loads(capsys.readouterr().out)["exact"]["pruned"])

    assert cli_exact("acme-stride") == cli_exact("uniform") < cli_exact("attention")

    inputs = _batch([_ids(40, [(4, 16)], seed=2)])
    with halfv.apply(MODELS["sdpa"], plugin, adapter=ADAPTER) as handle, torch.no_grad():
        MODELS["sdpa"](**inputs)
        report = handle.flops()
    assert sum(x.relevance_keys for x in report.pruned_loads) == 0
    assert sum(x.selection_pairs for x in report.pruned_loads) == 0
