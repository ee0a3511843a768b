"""halfv-example: a separately installed halfv plugin adding a VipLLaVA adapter.

halfv loads :mod:`halfv_example.plugin` through the ``vipllava`` entry point of the
``halfv`` group (see this package's ``pyproject.toml``); nothing needs importing by hand::

    import halfv

    with halfv.apply(vipllava_model) as handle:  # VipLlavaForConditionalGeneration
        model.generate(**inputs, max_new_tokens=32)
"""

from __future__ import annotations

from halfv_example.plugin import VipLlavaAdapter

__all__ = ["VipLlavaAdapter"]
