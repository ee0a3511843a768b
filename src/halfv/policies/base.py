"""What several built-in policies share: the features check and the non-selecting SSR base."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from halfv.errors import HalfvValueError
from halfv.interfaces import IVRPolicy, SSRPolicy

__all__ = ["NonSelectingSSR", "require_features"]


def require_features(policy: IVRPolicy, features: Tensor | None) -> Tensor:
    """``features``, or an error naming ``policy`` when it is ``None``."""
    if features is None:  # select() already refuses this; kept for the type checker
        msg = f"policy {policy.name!r} needs features; pass a [B, N, D] tensor"
        raise HalfvValueError(msg)
    return features


class NonSelectingSSR(SSRPolicy):
    """An SSR policy that never selects: :meth:`select` always raises."""

    needs_scores: ClassVar[bool] = False
    needs_features: ClassVar[bool] = False

    def select(self, scores: Tensor, features: Tensor | None, keep: int) -> Tensor:
        """Refuse: this policy keeps every visual token.

        Raises:
            NotImplementedError: always (also for ``keep == N``); check ``policy.mode``
                and call ``select`` only on ``"prune"`` policies.
        """
        msg = (
            f"SSR policy {self.name!r} has mode {self.mode!r} and does not select tokens; "
            "call select() only on policies with mode 'prune'"
        )
        raise NotImplementedError(msg)
