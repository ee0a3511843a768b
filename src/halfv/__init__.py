"""halfv: training-free visual-token pruning for multimodal LLMs (HalfV, arXiv 2604.16462).

Quick start::

    import halfv
    with halfv.apply(model) as handle:      # the backbone's default schedule
        out = model.generate(**inputs, max_new_tokens=32)
    print(handle.stats.kept_visual_per_layer())
"""

from __future__ import annotations

import importlib
import sys

from halfv._version import __version__
from halfv.config import PruningConfig, load_config, save_config
from halfv.errors import (
    ConfigError,
    DuplicateComponentError,
    HalfvError,
    PluginLoadError,
    UnknownComponentError,
    UnsupportedModelError,
)
from halfv.interfaces import (
    AttentionParts,
    BackboneAdapter,
    EntropyEstimator,
    EntropyResult,
    IVRPolicy,
    SaturationDetector,
    SaturationReport,
    SSRPolicy,
)
from halfv.ops.budget import kept_count
from halfv.pipeline import Pipeline, PruningHandle, apply, handle_of
from halfv.plugins import (
    get_adapter,
    get_adapter_for,
    get_estimator,
    get_ivr_policy,
    get_ssr_policy,
    list_components,
    plugin_failures,
)
from halfv.plugins.hookspecs import hookimpl
from halfv.runtime.plan import LayerStats, PruneStats
from halfv.saturation import KLSaturationDetector

__all__ = [
    "AttentionParts",
    "BackboneAdapter",
    "ConfigError",
    "DuplicateComponentError",
    "EntropyEstimator",
    "EntropyResult",
    "HalfvError",
    "IVRPolicy",
    "KLSaturationDetector",
    "LayerStats",
    "Pipeline",
    "PluginLoadError",
    "PruneStats",
    "PruningConfig",
    "PruningHandle",
    "SSRPolicy",
    "SaturationDetector",
    "SaturationReport",
    "UnknownComponentError",
    "UnsupportedModelError",
    "__version__",
    "apply",
    "get_adapter",
    "get_adapter_for",
    "get_estimator",
    "get_ivr_policy",
    "get_ssr_policy",
    "handle_of",
    "hookimpl",
    "kept_count",
    "list_components",
    "load_config",
    "plugin_failures",
    "save_config",
]

#: Module paths from before the regroup by concern (issue #21) that the user guides import
#: from, each an alias of the module's new home, so ``from halfv.selection import
#: topk_indices`` keeps working. Internal modules moved without an alias.
_MOVED_MODULES: dict[str, str] = {
    "halfv.budget": "halfv.ops.budget",
    "halfv.hookspecs": "halfv.plugins.hookspecs",
    "halfv.model_specs": "halfv.flops.model_specs",
    "halfv.selection": "halfv.ops.selection",
}
for _old, _new in _MOVED_MODULES.items():
    sys.modules[_old] = importlib.import_module(_new)
    globals()[_old.rpartition(".")[2]] = sys.modules[_old]
del _old, _new
