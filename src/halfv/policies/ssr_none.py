"""SSR policy ``none``: leave the visual tokens alone after IVR."""

from __future__ import annotations

from typing import ClassVar, Literal

from halfv.policies.base import NonSelectingSSR

__all__ = ["NoSSR"]


class NoSSR(NonSelectingSSR):
    """Leave the visual tokens alone after IVR."""

    name: ClassVar[str] = "none"
    mode: ClassVar[Literal["prune", "freeze", "none"]] = "none"
