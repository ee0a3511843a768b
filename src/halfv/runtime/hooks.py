"""The hooks an applied model carries: small callables that hold their runtime.

Each hook is an object (no closure), so ``copy.deepcopy`` and pickling of an applied model
copy the hooks with the model and rebind them to the copy's runtime
(:meth:`halfv.runtime.core.PruningRuntime.__deepcopy__`). Inside ``torch.compile`` (a
compiled decode step: transformers compiles decode steps only) the call hooks do nothing
and the layer hooks take the traceable path (:func:`halfv.runtime.decode.compiled_decode_layer`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from halfv.runtime.core import PruningRuntime

__all__ = [
    "EntryEnter",
    "EntryExit",
    "Hook",
    "LayerForward",
    "OuterEnter",
    "OuterExit",
    "Tap",
    "find_runtime",
]


class Hook:
    """A hook of one runtime."""

    def __init__(self, runtime: PruningRuntime) -> None:
        self.runtime = runtime


class OuterEnter(Hook):
    def __call__(self, _module: nn.Module, _args: Any, kwargs: dict[str, Any]) -> None:
        if not torch.compiler.is_compiling():
            self.runtime.open_outer(kwargs)


class OuterExit(Hook):
    def __call__(self, _module: nn.Module, _args: Any, _kwargs: Any, _output: Any) -> None:
        if not torch.compiler.is_compiling():
            self.runtime.close_outer()


class EntryEnter(Hook):
    def __call__(self, _module: nn.Module, args: Any, kwargs: dict[str, Any]) -> None:
        if not torch.compiler.is_compiling():
            self.runtime.open_entry(args, kwargs)


class EntryExit(Hook):
    def __call__(self, _module: nn.Module, _args: Any, _kwargs: Any, _output: Any) -> None:
        if not torch.compiler.is_compiling():
            self.runtime.close_entry()


class LayerForward(Hook):
    """A decoder layer's instance ``forward`` (no hook: the module keeps nn.Module's
    fast call path): the stage's inputs in a pruned prefill or decode step, then the
    layer's previous ``forward``, or for a frozen layer the frozen path in a pruned prefill.
    """

    def __init__(
        self, runtime: PruningRuntime, idx: int, original: Callable[..., Any], frozen: bool
    ) -> None:
        super().__init__(runtime)
        self.idx, self.original, self.frozen = idx, original, frozen

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        runtime = self.runtime
        if torch.compiler.is_compiling():  # a decode step: frozen layers run as they are
            changed = runtime.compiled_decode_layer(self.idx, args, kwargs)
            if changed is not None:
                args, kwargs = changed
            return self.original(*args, **kwargs)
        changed = runtime.layer_enter(self.idx, args, kwargs)
        if changed is not None:
            args, kwargs = changed
        if self.frozen:
            return runtime.frozen_forward(self.idx, self.original, args, kwargs)
        return self.original(*args, **kwargs)


class Tap(Hook):
    def __init__(self, runtime: PruningRuntime, idx: int, name: str) -> None:
        super().__init__(runtime)
        self.idx, self.name = idx, name

    def __call__(self, _module: nn.Module, _inputs: Any, output: Any) -> None:
        if not torch.compiler.is_compiling():
            self.runtime.tap(self.idx, self.name, output)


def find_runtime(model: nn.Module) -> PruningRuntime | None:
    """The runtime whose hooks are installed on ``model`` (or on its copy), if any."""
    for module in model.modules():
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, EntryEnter) and hook.runtime.model is model:
                return hook.runtime
    return None
