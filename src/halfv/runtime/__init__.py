"""What runs inside a live forward of an applied model.

* :mod:`halfv.runtime.core`: the hooks and the runtime that installs them;
* :mod:`halfv.runtime.state`: per-call state (per thread) and plans kept with KV caches;
* :mod:`halfv.runtime.plan`: one pruned prefill's spans, budgets, layouts and statistics;
* :mod:`halfv.runtime.layout`: stage layouts, gathers and mask remaps (pure tensor maths);
* :mod:`halfv.runtime.stage_inputs`: what each decoder layer of a stage receives;
* :mod:`halfv.runtime.scoring`: relevance from the scoring layer's own projections;
* :mod:`halfv.runtime.freeze`: the frozen-visual decoder layer (SSR ``freeze``);
* :mod:`halfv.runtime.caches`: which KV caches hold pruned layers, static layers sized;
* :mod:`halfv.runtime.sdpa_backends`: the decode-step attention backend choice.
"""

from halfv.runtime.core import SUPPORTED_ATTENTION, PruningRuntime, find_runtime

__all__ = ["SUPPORTED_ATTENTION", "PruningRuntime", "find_runtime"]
