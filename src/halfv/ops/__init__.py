"""Pure tensor maths behind the pipeline: no hooks, no models, no plugin lookups.

* :mod:`halfv.ops.budget`: the budget rule, how many tokens a span keeps.
* :mod:`halfv.ops.selection`: top-k, farthest-point sampling and the HalfV selection.
* :mod:`halfv.ops.fps_kernel` (and its Triton kernel, ``_fps_triton``): the fused
  farthest-point sampling kernel and its dispatch.
* :mod:`halfv.ops.strides`: evenly strided (uniform) downsampling.
* :mod:`halfv.ops.spans`: where the visual tokens of a sequence are.
* :mod:`halfv.ops.relevance`: last-token relevance of visual tokens, without eager attention.
* :mod:`halfv.ops.host_ops`: counting the aten ops and host reads a piece of code dispatches.
* :mod:`halfv.ops.cost`: the cost model that tells whether a pruning stage pays on a call.
"""
