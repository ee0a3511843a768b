"""halfv-lab: the trained zoo VLMs, their data, training and the accuracy benchmark of halfv.

Not needed to prune a model: ``halfv`` is the library; this distribution is the
laboratory its results come from.

* :mod:`halfv_lab.zoo` -- three small VLMs (LLaVA, InternVL, Qwen2.5-VL around SmolLM2-135M),
  their training code, answer probes, label heads and shipped checkpoints;
* :mod:`halfv_lab.data` -- the easy-VQA and synthetic question sets;
* :mod:`halfv_lab.bench` -- the accuracy benchmark and its CI gate;
* :mod:`halfv_lab.demo` -- the model behind ``halfv demo``;
* :mod:`halfv_lab.plugin` -- the ``halfv`` plugin adding ``halfv demo`` and
  ``halfv bench accuracy``.
"""

from __future__ import annotations

from halfv_lab._version import __version__

__all__ = ["__version__"]
