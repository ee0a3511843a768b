"""Built-in SSR (deep-layer) policies.

* ``prune`` (:class:`TopKPrune`) keeps the most relevant visual tokens (method §5a; the
  relevance is RoPE-aware and computed over the *current* visual span).
* ``freeze`` (:class:`Freeze`) keeps every visual token but stops updating it (method §5b).
* ``none`` (:class:`NoSSR`) does nothing.

Only ``prune`` policies select tokens; ``freeze`` and ``none`` raise
:class:`NotImplementedError` from :meth:`~halfv.SSRPolicy.select`, for every ``keep``.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from torch import Tensor

from halfv.interfaces import SSRPolicy
from halfv.ops.selection import topk_indices

__all__ = ["Freeze", "NoSSR", "TopKPrune"]


class TopKPrune(SSRPolicy):
    """Keep the ``keep`` most relevant visual tokens (attention only, no diversity step).

    Ties in relevance go to the lower index (:func:`halfv.ops.selection.topk_indices`).
    """

    name: ClassVar[str] = "prune"
    mode: ClassVar[Literal["prune", "freeze", "none"]] = "prune"
    needs_scores: ClassVar[bool] = True
    needs_features: ClassVar[bool] = False

    def _choose(self, scores: Tensor, features: Tensor | None, keep: int) -> Tensor:
        return topk_indices(scores, keep)


class _NonSelecting(SSRPolicy):
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


class Freeze(_NonSelecting):
    """Freeze the visual tokens from the SSR layer on (LLaVA-type "layer-level inactivity").

    Every IVR survivor is kept; only text rows go through the queries, the output
    projection and the MLP, while text still attends to the (unchanged) visual keys.
    """

    name: ClassVar[str] = "freeze"
    mode: ClassVar[Literal["prune", "freeze", "none"]] = "freeze"


class NoSSR(_NonSelecting):
    """Leave the visual tokens alone after IVR."""

    name: ClassVar[str] = "none"
    mode: ClassVar[Literal["prune", "freeze", "none"]] = "none"
