"""halfv-example: a separately installed halfv plugin adding a Qwen2-VL adapter.

halfv loads :mod:`halfv_example.plugin` through the ``qwen2-vl`` entry point of the
``halfv`` group (see this package's ``pyproject.toml``); nothing needs importing by hand::

    import halfv

    with halfv.apply(qwen2_vl_model) as handle:  # Qwen2VLForConditionalGeneration
        model.generate(**inputs, max_new_tokens=32)
"""

from __future__ import annotations

from halfv_example.plugin import Qwen2VLAdapter

__all__ = ["Qwen2VLAdapter"]
