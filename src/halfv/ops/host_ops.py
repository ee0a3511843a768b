"""Count the aten ops and host reads a piece of code dispatches (decode-overhead checks).

Used by ``benchmarks/bench_decode.py`` (ops and syncs per decode step) and by
``tests/runtime/test_decode_overhead.py`` (halfv adds no host reads to a decode step).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Self

import torch
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["HOST_OPS", "OpCounter"]

#: Ops that read tensor values on the host (a device sync on a GPU) or build tensors from
#: host data. Under ``inference_mode`` ``.item()`` / ``bool()`` reach a dispatch mode as
#: ``item`` / ``is_nonzero`` instead of ``_local_scalar_dense``.
HOST_OPS = frozenset(
    {
        "_local_scalar_dense",
        "item",
        "is_nonzero",
        "nonzero",
        "masked_select",
        "lift_fresh",
        "_unique2",
        "unique_consecutive",
        "unique_dim",
        "bincount",
        "repeat_interleave",
    }
)


class OpCounter(TorchDispatchMode):  # type: ignore[no-untyped-call]  # torch leaves it untyped
    """Counts the aten ops dispatched while active, by name, and ``Tensor.tolist`` calls.

    ``tolist`` reads the data directly and never reaches the dispatcher on the CPU, so it
    is counted by patching ``torch.Tensor.tolist`` while the mode is active.
    """

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.ops: Counter[str] = Counter()
        self._tolist: Any = None

    def __enter__(self) -> Self:
        tolist = self._tolist = torch.Tensor.tolist

        def counted(tensor: torch.Tensor) -> Any:
            self.ops["tolist"] += 1
            return tolist(tensor)

        torch.Tensor.tolist = counted  # type: ignore[method-assign, assignment]
        return super().__enter__()  # type: ignore[no-untyped-call, no-any-return]

    def __exit__(self, *exc: object) -> None:
        torch.Tensor.tolist = self._tolist  # type: ignore[method-assign]
        super().__exit__(*exc)  # type: ignore[no-untyped-call]

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        self.ops[func.__name__.split(".")[0]] += 1
        return func(*args, **(kwargs or {}))

    @property
    def dispatched(self) -> int:
        """Aten ops seen so far (``tolist`` calls left out)."""
        return self.ops.total() - self.ops["tolist"]

    @property
    def host(self) -> Counter[str]:
        """Host reads and host-built tensors seen so far, by op (``tolist`` included)."""
        return Counter({op: n for op, n in self.ops.items() if op in HOST_OPS or op == "tolist"})
