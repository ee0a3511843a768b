"""Truncated Matrix Entropy (TME), the redundancy statistic of HalfV.

For one hidden-state matrix ``Z`` (``T`` tokens by ``D`` features) the estimator

1. casts to float64 and, by default, centres the columns (subtracts the token mean);
2. forms the Gram matrix ``ZᵀZ`` (``D x D``) when ``T >= D``, else ``ZZᵀ`` (``T x T``); both
   have the same nonzero spectrum, and ``d = min(T, D)`` is the size of the one used;
3. takes its eigenvalues, clamped at ``>= 0`` and sorted descending, and their sum ``tr``;
4. keeps the top ``k`` eigenvalues (``k`` chosen by :attr:`TMEEstimator.method`) and
   renormalises them into a distribution ``p_i = λ_i / Σ_{j<=k} λ_j`` (clamped at ``1e-12``);
5. reports the Shannon entropy ``h1 = -Σ p log p`` (the TME itself), the Rényi-2 entropy
   ``h2 = -log Σ p²``, the effective rank ``exp(h1)``, ``h1 / log k`` and ``1 - exp(h1) / k``.

Everything is vectorised over a batch ``[B, T, D]`` of equally sized matrices: one batched
``torch.linalg.eigvalsh`` call, masks instead of a Python loop, and no host synchronisation.
The method is described in ``docs/estimators.md``; upstream it is ``compute_truncated_entropy``
of the HalfV ``metric_utils.py``.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor

from halfv.errors import HalfvTypeError, HalfvValueError
from halfv.interfaces import EntropyEstimator, EntropyResult

__all__ = ["DEGENERATE_TRACE", "PROBABILITY_FLOOR", "TMEEstimator"]

#: a matrix whose eigenvalue sum is not above this (or not finite) is degenerate: NaN outputs
DEGENERATE_TRACE = 1e-12
#: lower clamp of the renormalised probabilities ``p_i`` (as upstream)
PROBABILITY_FLOOR = 1e-12


class TMEEstimator(EntropyEstimator):
    """Truncated Matrix Entropy of hidden states (HalfV §2).

    ``k`` is chosen per matrix by ``method``:

    * ``"topk"``: ``k = min(max(1, self.k), d)``;
    * ``"kaiser"``: the number of eigenvalues above the mean, ``λ > (tr / d)(1 + tol)``;
    * ``"rho_kaiser"``: the same test on the normalised spectrum, ``λ / tr > (1 / d)(1 + tol)``;
    * ``"energy"``: the smallest ``k`` whose top eigenvalues hold ``energy * tr`` (``d`` if none);

    and is then clipped to ``[1, d]``. Note that ``kaiser`` on a flat spectrum (all
    eigenvalues equal) has nothing strictly above the mean, so it gives ``k = 1``; rounding
    can lift a few eigenvalues just above it, which a small ``tol`` (``1e-6``) absorbs.

    Degenerate matrices -- eigenvalue sum not finite or ``<= 1e-12``, e.g. all tokens
    identical, a single token with ``center=True``, or non-finite input -- give NaN in every
    float output and ``k = 0``; other matrices of the same batch are unaffected. (Upstream
    returned NaN silently too.) The threshold is absolute, so rescale inputs whose total
    centred energy is that small.

    Outputs are float64 tensors on the input's device. ``h1_normalized`` is ``h1 / log k``,
    defined as 0 when ``k == 1`` (upstream divided by ``log k + 1e-12``); it does not depend
    on ``log_base``. ``erank`` is always ``exp`` of the natural-log ``h1``.

    Attributes:
        k: eigenvalues kept by ``method="topk"``. Upstream defaults differ by backbone:
            4 in the LLaVA (lmms-eval 0.35v) code and 50 in the Qwen2.5-VL (0.5v) code;
            this class defaults to 50. Ignored by the other methods. A strict int:
            ``True`` and ``4.0`` are refused.
        method: how ``k`` is chosen, see above.
        energy: spectral energy fraction for ``method="energy"``, in ``(0, 1]``.
        tol: relative margin above the mean for the Kaiser rules, ``>= 0``.
        log_base: ``"e"`` (nats) or ``"2"`` (bits) for ``h1`` and ``h2``.
        clamp_gram: reproduce the upstream quirk of clamping the Gram matrix element-wise at
            ``>= 0`` before the eigendecomposition (negative covariances are zeroed). Off by
            default because it is not a spectral operation: the result then depends on the
            feature basis (rotating the features, or flipping the sign of one, changes it)
            and on which Gram form is used (``T >= D`` or not); and the token Gram ``ZZᵀ`` of
            centred data has rows summing to zero, so it always has negative entries and the
            clamp always changes its spectrum. Turn it on only to reproduce upstream numbers.
        center: subtract the per-feature mean over tokens first (upstream does).

    Example:
        >>> est = TMEEstimator(k=4)
        >>> est.estimate(torch.randn(16, 8)).h1.shape
        torch.Size([])
    """

    name: ClassVar[str] = "tme"

    k: int = Field(
        50,
        ge=1,
        strict=True,
        description="Eigenvalues kept by method='topk' (>= 1); upstream used 4 (LLaVA), 50 (Qwen).",
    )
    method: Literal["topk", "kaiser", "rho_kaiser", "energy"] = Field(
        "topk", description="Rule choosing k: 'topk', 'kaiser', 'rho_kaiser' or 'energy'."
    )
    energy: float = Field(
        0.95, gt=0.0, le=1.0, description="Energy fraction for method='energy', in (0, 1]."
    )
    tol: float = Field(
        0.0,
        ge=0.0,
        allow_inf_nan=False,
        description="Relative margin above the mean eigenvalue for the Kaiser rules (>= 0).",
    )
    log_base: Literal["e", "2"] = Field("e", description="Logarithm base of h1 and h2.")
    clamp_gram: bool = Field(
        False, description="Upstream quirk: clamp the Gram matrix at >= 0 (not spectral)."
    )
    center: bool = Field(True, description="Centre the features over tokens first.")

    # ------------------------------------------------------------------ public API
    def estimate(self, hidden: Tensor) -> EntropyResult:
        """Truncated-spectrum statistics of ``hidden``.

        Args:
            hidden: ``[T, D]`` for one matrix or ``[B, T, D]`` for a batch; any floating
                dtype and device.

        Returns:
            An :class:`~halfv.interfaces.EntropyResult` whose tensors have shape ``[]`` or
            ``[B]`` (float64; ``k`` int64) and whose ``ambient_dim`` is ``min(T, D)``.

        Raises:
            TypeError: ``hidden`` is not a tensor.
            ValueError: wrong number of dimensions, an empty dimension, or a non-float dtype.
        """
        squeeze = _check_hidden(hidden)
        eig, tr, valid = self._eigenvalues(hidden.unsqueeze(0) if squeeze else hidden)
        d = eig.shape[-1]
        k = self._choose_k(eig, tr, d)

        ranks = torch.arange(1, d + 1, device=eig.device)
        kept = ranks <= k.unsqueeze(-1)
        top = torch.where(kept, eig, 0.0)
        top_sum = top.sum(-1, keepdim=True)
        top_sum = torch.where(top_sum > 0, top_sum, 1.0)  # only degenerate rows hit 0
        p = (top / top_sum).clamp(min=PROBABILITY_FLOOR)
        h1 = -torch.where(kept, p * p.log(), 0.0).sum(-1)
        h2 = -torch.where(kept, p * p, 0.0).sum(-1).log()

        k_float = k.to(torch.float64)
        erank = h1.exp()
        # log k >= log 2 wherever k > 1; the clamp only keeps the unused branch finite
        h1_normalized = torch.where(k > 1, h1 / k_float.log().clamp(min=math.log(2)), 0.0)
        redundancy = 1.0 - erank / k_float
        if self.log_base == "2":
            h1 = h1 / math.log(2)
            h2 = h2 / math.log(2)

        def out(x: Tensor) -> Tensor:
            x = torch.where(valid, x, math.nan)
            return x[0] if squeeze else x

        k = torch.where(valid, k, 0)
        return EntropyResult(
            h1=out(h1),
            h2=out(h2),
            h1_normalized=out(h1_normalized),
            erank=out(erank),
            redundancy=out(redundancy),
            k=k[0] if squeeze else k,
            ambient_dim=d,
        )

    def spectrum(self, hidden: Tensor) -> Tensor:
        """Normalised eigenvalue spectrum ``λ / tr``, descending, for plots.

        Uses the same centring, Gram form and ``clamp_gram`` setting as :meth:`estimate`
        (upstream ``compute_spectrum_data``).

        Args:
            hidden: ``[T, D]`` or ``[B, T, D]``, as for :meth:`estimate`.

        Returns:
            For ``[T, D]`` input, the 1-D float64 tensor of the values above ``1e-12`` (empty
            for a degenerate matrix). For ``[B, T, D]`` input, a ``[B, min(T, D)]`` tensor
            whose row ``i`` is ``spectrum(hidden[i])`` padded with zeros on the right.

        Raises:
            TypeError: ``hidden`` is not a tensor.
            ValueError: as for :meth:`estimate`.
        """
        squeeze = _check_hidden(hidden)
        eig, tr, valid = self._eigenvalues(hidden.unsqueeze(0) if squeeze else hidden)
        safe_tr = torch.where(valid, tr, 1.0).unsqueeze(-1)
        rho = eig / safe_tr
        rho = torch.where((rho > DEGENERATE_TRACE) & valid.unsqueeze(-1), rho, 0.0)
        if squeeze:
            return rho[0][rho[0] > 0]
        return rho

    # ------------------------------------------------------------------ internals
    def _eigenvalues(self, hidden: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Descending clamped eigenvalues ``[B, d]``, their sum ``[B]`` and validity ``[B]``."""
        z = hidden.to(torch.float64)
        if self.center:
            z = z - z.mean(dim=-2, keepdim=True)
        zt = z.transpose(-2, -1)
        gram = zt @ z if z.shape[-2] >= z.shape[-1] else z @ zt
        if self.clamp_gram:
            gram = gram.clamp(min=0.0)
        finite = torch.isfinite(gram).all(dim=-1).all(dim=-1)
        # eigvalsh may fail on NaN/inf; such matrices are reported as degenerate anyway.
        gram = torch.where(finite[:, None, None], gram, 0.0)
        eig = torch.linalg.eigvalsh(gram).clamp(min=0.0).flip(-1)
        # the sum as the last partial sum, so that the energy rule reaches it exactly
        tr = eig.cumsum(-1)[..., -1]
        valid = finite & torch.isfinite(tr) & (tr > DEGENERATE_TRACE)
        return eig, tr, valid

    def _choose_k(self, eig: Tensor, tr: Tensor, d: int) -> Tensor:
        """Number of eigenvalues kept, ``[B]`` int64 in ``[1, d]`` (per :attr:`method`)."""
        if self.method == "topk":
            return torch.full(tr.shape, min(max(1, self.k), d), dtype=torch.int64, device=tr.device)
        safe_tr = torch.where(tr > DEGENERATE_TRACE, tr, 1.0).unsqueeze(-1)
        if self.method == "kaiser":
            k = (eig > (safe_tr / d) * (1.0 + self.tol)).sum(-1)
        elif self.method == "rho_kaiser":
            k = (eig / safe_tr > (1.0 / d) * (1.0 + self.tol)).sum(-1)
        else:  # energy: cumsum is non-decreasing, so k = 1 + #{i : cumsum_i < energy * tr}
            below = eig.cumsum(-1) < self.energy * safe_tr
            k = below.sum(-1) + 1
        return k.clamp(min=1, max=d).to(torch.int64)


def _check_hidden(hidden: object) -> bool:
    """Validate ``hidden``; return whether it is a single ``[T, D]`` matrix."""
    if not isinstance(hidden, Tensor):
        msg = f"hidden must be a torch.Tensor of shape [T, D] or [B, T, D], got {type(hidden)!r}"
        raise HalfvTypeError(msg)
    if hidden.dim() not in (2, 3):
        msg = (
            f"hidden must have shape [T, D] or [B, T, D], got {hidden.dim()} dimensions "
            f"{tuple(hidden.shape)}; reshape it (e.g. hidden.reshape(-1, T, D))"
        )
        raise HalfvValueError(msg)
    if hidden.numel() == 0:
        msg = (
            f"hidden has an empty dimension, shape {tuple(hidden.shape)}; pass at least one "
            "matrix with at least one token and one feature"
        )
        raise HalfvValueError(msg)
    if not hidden.is_floating_point():
        msg = f"hidden must have a floating dtype, got {hidden.dtype}; cast it with hidden.float()"
        raise HalfvValueError(msg)
    return hidden.dim() == 2
