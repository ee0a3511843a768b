"""One attention call per layer for Qwen2.5-VL's windowed vision tower.

transformers' ``Qwen2_5_VLVisionAttention`` without flash-attn (sdpa or eager) splits the
packed sequence at ``cu_seqlens`` on the host and calls attention once **per window**: at
4096 visual tokens (16384 patches, windows of 64 patches) that is 256 calls in each of the
28 windowed blocks, and ``batch`` times as many for a batch of images. :func:`fast_vision`
replaces the forward of every vision attention module (an instance attribute, removed
again by the handle) with the same projections and rotary embedding followed by **one**
call over all windows:

* ``varlen``: ``torch.nn.attention.varlen.varlen_attn`` (flash attention over
  ``cu_seqlens``; CUDA, fp16/bf16, torch >= 2.9), the kernel transformers uses with
  flash-attn;
* ``padded``: the windows gathered into one ``[windows, heads, longest, head_dim]`` batch
  for one ``scaled_dot_product_attention`` call, padded keys masked out (no gather and no
  mask when every window has the same length, the common case). The same maths as the
  stock path: equal to it within float32 round-off on the CPU.

``backend="auto"`` takes ``varlen`` where it can run and ``padded`` elsewhere. The window
layout of a ``cu_seqlens`` tensor is read to the host once per vision forward (the stock
path reads it once per layer).
"""

from __future__ import annotations

import inspect
import itertools
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from halfv.errors import HalfvValueError, UnsupportedModelError

__all__ = [
    "BACKENDS",
    "FastVisionHandle",
    "fast_vision",
    "padded_window_attention",
    "varlen_available",
]

#: accepted values of ``fast_vision(..., backend=)``
BACKENDS: tuple[str, ...] = ("auto", "varlen", "padded")
_ATTENTION_CLASSES = ("Qwen2_5_VLVisionAttention",)
_CACHE_SIZE = 4  # window layouts kept: the windowed and the full-attention cu_seqlens


def _varlen_fn() -> Callable[..., Tensor] | None:
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return cast("Callable[..., Tensor]", varlen_attn)


def varlen_available(device: torch.device | str | None = None) -> bool:
    """Whether ``varlen_attn`` can run here: torch has it and ``device`` (default: the
    current CUDA device) is a CUDA device."""
    if _varlen_fn() is None or not torch.cuda.is_available():
        return False
    return device is None or torch.device(device).type == "cuda"


@dataclass
class _Layout:
    """Where the windows of one ``cu_seqlens`` lie, read to the host once."""

    cu: Tensor  # the original tensor: kept alive so its ``id`` is not reused
    lengths: list[int]
    cu32: Tensor  # int32 on the tensor's device, for varlen_attn
    longest: int
    gather: Tensor | None = None  # [windows, longest] row of each padded slot
    flat: Tensor | None = None  # [seq] padded slot of each row, in order
    mask: Tensor | None = None  # [windows, 1, 1, longest] real keys
    equal: bool = field(init=False)

    def __post_init__(self) -> None:
        self.equal = len(set(self.lengths)) <= 1

    def padding(self) -> tuple[Tensor, Tensor, Tensor]:
        """The gather index, the flat positions and the key mask (built on first use)."""
        if self.gather is None or self.flat is None or self.mask is None:
            device = self.cu.device
            lengths = torch.tensor(self.lengths, device=device)
            starts = self.cu32[:-1].long()
            slots = torch.arange(self.longest, device=device)
            valid = slots[None, :] < lengths[:, None]
            total = int(sum(self.lengths))
            self.gather = (starts[:, None] + slots[None, :]).clamp_(max=max(total - 1, 0))
            self.flat = valid.reshape(-1).nonzero().squeeze(1)
            self.mask = valid[:, None, None, :]
        return self.gather, self.flat, self.mask


def _layout_of(cu_seqlens: Tensor) -> _Layout:
    bounds = [int(b) for b in cu_seqlens.tolist()]
    lengths = [b - a for a, b in itertools.pairwise(bounds)]
    cu32 = cu_seqlens.to(torch.int32)
    return _Layout(cu_seqlens, lengths, cu32, max(lengths, default=0))


def padded_window_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    cu_seqlens: Tensor,
    scale: float | None = None,
    *,
    layout: _Layout | None = None,
) -> Tensor:
    """Attention within each window ``cu_seqlens[i]:cu_seqlens[i + 1]``, in one SDPA call.

    ``query``, ``key`` and ``value`` are packed ``[seq, heads, head_dim]``; returns the
    same shape. Windows of equal length are a reshape; unequal ones are padded to the
    longest and the padded keys masked (padded query rows are computed and dropped).
    """
    lay = layout if layout is not None else _layout_of(cu_seqlens)
    seq, heads, dim = query.shape
    if lay.equal:
        windows = len(lay.lengths)

        def batched(t: Tensor) -> Tensor:
            return t.reshape(windows, lay.longest, heads, dim).transpose(1, 2)

        out = F.scaled_dot_product_attention(
            batched(query), batched(key), batched(value), scale=scale
        )
        return out.transpose(1, 2).reshape(seq, heads, dim)
    gather, flat, mask = lay.padding()

    def padded(t: Tensor) -> Tensor:
        return t[gather].transpose(1, 2)  # [windows, heads, longest, dim]

    out = F.scaled_dot_product_attention(
        padded(query), padded(key), padded(value), attn_mask=mask, scale=scale
    )
    return out.transpose(1, 2).reshape(-1, heads, dim).index_select(0, flat)


class FastVisionHandle:
    """The fast vision attention installed on a model; a context manager.

    Attributes:
        model: the model it was installed on.
        backend: the requested backend (``auto``, ``varlen`` or ``padded``).
        backends_used: the backends that have run so far (``varlen`` / ``padded``).
        varlen_error: why ``auto`` left ``varlen`` for ``padded`` (a kernel error), or None.
        modules: the patched attention modules.
    """

    def __init__(self, model: nn.Module, backend: str = "auto") -> None:
        if backend not in BACKENDS:
            msg = f"backend must be one of {BACKENDS}, not {backend!r}"
            raise HalfvValueError(msg)
        self.model = model
        self.backend = backend
        self.backends_used: set[str] = set()
        self.modules: list[nn.Module] = []
        self._layouts: dict[int, _Layout] = {}
        self._varlen = _varlen_fn()
        self.varlen_error: str | None = None
        self._varlen_scale = self._varlen is not None and (
            "scale" in inspect.signature(self._varlen).parameters
        )
        found = [m for m in model.modules() if type(m).__name__ in _ATTENTION_CLASSES]
        if not found:
            msg = (
                f"fast_vision supports Qwen2.5-VL vision towers ({', '.join(_ATTENTION_CLASSES)}); "
                f"{type(model).__name__} has none"
            )
            raise UnsupportedModelError(msg)
        for attn in found:
            if "forward" in vars(attn):
                self.remove()
                msg = f"{type(attn).__name__} already has a patched forward (fast_vision twice?)"
                raise UnsupportedModelError(msg)
            rope = getattr(sys.modules[type(attn).__module__], "apply_rotary_pos_emb_vision", None)
            if rope is None:
                self.remove()
                msg = "this transformers version has no apply_rotary_pos_emb_vision"
                raise UnsupportedModelError(msg)
            attn.forward = self._make_forward(attn, rope)
            self.modules.append(attn)

    # ------------------------------------------------------------------ the replacement
    def _layout(self, cu_seqlens: Tensor) -> _Layout:
        lay = self._layouts.get(id(cu_seqlens))
        if lay is None or lay.cu is not cu_seqlens:
            if len(self._layouts) >= _CACHE_SIZE:
                self._layouts.clear()
            lay = _layout_of(cu_seqlens)
            self._layouts[id(cu_seqlens)] = lay
        return lay

    def _use_varlen(self, query: Tensor, scale: float) -> bool:
        if self.backend == "padded":
            return False
        default_scale = abs(scale - query.shape[-1] ** -0.5) < 1e-12
        ok = (
            self._varlen is not None
            and query.is_cuda
            and query.dtype in (torch.float16, torch.bfloat16)
            and query.shape[-1] % 8 == 0
            and query.shape[-1] <= 256
            and (default_scale or self._varlen_scale)
        )
        if self.backend == "varlen" and not ok:
            msg = (
                "backend='varlen' needs torch.nn.attention.varlen, a CUDA tensor in fp16/bf16 "
                f"and a head dim that is a multiple of 8 up to 256 (got {query.device}, "
                f"{query.dtype}, head dim {query.shape[-1]})"
            )
            raise UnsupportedModelError(msg)
        return ok

    def attention(self, query: Tensor, key: Tensor, value: Tensor, cu_seqlens: Tensor,
                  scale: float) -> Tensor:  # fmt: skip
        """Windowed attention of packed ``[seq, heads, head_dim]`` tensors, one call."""
        lay = self._layout(cu_seqlens)
        if self._use_varlen(query, scale):
            assert self._varlen is not None
            extra: dict[str, Any] = {}
            if abs(scale - query.shape[-1] ** -0.5) >= 1e-12:
                extra["scale"] = scale
            try:
                out = self._varlen(
                    query.contiguous(), key.contiguous(), value.contiguous(),
                    lay.cu32, lay.cu32, lay.longest, lay.longest, **extra,
                )  # fmt: skip
            except RuntimeError as exc:
                if self.backend == "varlen":
                    raise
                # auto: this build's kernel refused the shapes; padded from now on
                self.varlen_error = f"{type(exc).__name__}: {exc}"[:300]
                self._varlen = None
            else:
                self.backends_used.add("varlen")
                return out
        self.backends_used.add("padded")
        return padded_window_attention(query, key, value, cu_seqlens, scale, layout=lay)

    def _make_forward(self, attn: nn.Module, rope: Callable[..., Any]) -> Callable[..., Tensor]:
        handle = self
        qkv_proj, out_proj = attn.get_submodule("qkv"), attn.get_submodule("proj")
        heads, scaling = int(vars(attn)["num_heads"]), float(vars(attn)["scaling"])

        def forward(
            hidden_states: Tensor,
            cu_seqlens: Tensor,
            rotary_pos_emb: Tensor | None = None,
            position_embeddings: tuple[Tensor, Tensor] | None = None,
            **_: Any,  # max_seqlen and attention kwargs: unused here
        ) -> Tensor:
            seq = hidden_states.shape[0]
            qkv = qkv_proj(hidden_states).reshape(seq, 3, heads, -1).permute(1, 0, 2, 3)
            query, key, value = qkv.unbind(0)
            if position_embeddings is None:
                if rotary_pos_emb is None:
                    msg = "fast_vision needs the vision rotary embedding"
                    raise UnsupportedModelError(msg)
                emb = torch.cat((rotary_pos_emb, rotary_pos_emb), dim=-1)
                position_embeddings = (emb.cos(), emb.sin())
            cos, sin = position_embeddings
            query, key = rope(query, key, cos, sin)
            out = handle.attention(query, key, value, cu_seqlens, scaling)
            projected: Tensor = out_proj(out.reshape(seq, -1).contiguous())
            return projected

        return forward

    # ------------------------------------------------------------------ lifecycle
    def remove(self) -> None:
        """Give every patched module its class's forward back (idempotent)."""
        for attn in self.modules:
            vars(attn).pop("forward", None)
        self.modules = []
        self._layouts.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove()


def fast_vision(model: nn.Module, backend: str = "auto") -> FastVisionHandle:
    """Run the vision attention of a Qwen2.5-VL ``model`` as one call per layer.

    Args:
        model: a model holding ``Qwen2_5_VLVisionAttention`` modules (the whole VLM or
            its vision tower).
        backend: ``auto`` (``varlen`` on CUDA fp16/bf16 where torch has it, else
            ``padded``), ``varlen`` (raise where it cannot run) or ``padded``.

    Returns:
        A :class:`FastVisionHandle`; ``with`` it, or call ``remove()``.

    Raises:
        UnsupportedModelError: no Qwen2.5-VL vision attention in ``model``, or it is
            already patched.
        ValueError: an unknown ``backend``.
    """
    return FastVisionHandle(model, backend)
