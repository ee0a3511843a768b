"""SSR policy ``freeze``: keep every visual token but stop updating it (method §5b)."""

from __future__ import annotations

from typing import ClassVar, Literal

from halfv.policies.base import NonSelectingSSR

__all__ = ["Freeze"]


class Freeze(NonSelectingSSR):
    """Freeze the visual tokens from the SSR layer on (LLaVA-type "layer-level inactivity").

    Every IVR survivor is kept; only text rows go through the queries, the output
    projection and the MLP, while text still attends to the (unchanged) visual keys.
    """

    name: ClassVar[str] = "freeze"
    mode: ClassVar[Literal["prune", "freeze", "none"]] = "freeze"
