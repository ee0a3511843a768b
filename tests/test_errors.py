"""Every deliberate error is a HalfvError, and still the built-in type callers catch."""

from __future__ import annotations

import ast
import builtins
import inspect
from pathlib import Path

import pytest

import halfv
from halfv import errors

SRC = Path(halfv.__file__).parent

#: modules not scanned (none: the lab's modules live in their own distribution)
NOT_COVERED: tuple[str, ...] = ()
#: (module, function) pairs that still raise a built-in, each to be converted by its owner
KNOWN_BUILTIN_RAISES: set[tuple[str, str]] = set()
#: the interface's own contract (SSRPolicy.select on non-pruning policies), not a user error
ALLOWED = {"NotImplementedError"}
#: halfv.testing's checks fail the caller's test the way a bare ``assert`` does (a package:
#: every module under ``testing/``)
ALLOWED_UNDER = {"testing/": {"AssertionError"}}
BUILTIN_EXCEPTIONS = {
    name
    for name, obj in vars(builtins).items()
    if isinstance(obj, type) and issubclass(obj, BaseException)
}


def _covered_modules() -> list[Path]:
    out = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if not any(rel == skip or rel.startswith(skip) for skip in NOT_COVERED):
            out.append(path)
    return out


def _builtin_raises(path: Path, root: Path = SRC) -> list[tuple[str, str, int, str]]:
    """``(module, enclosing function, line, exception name)`` of each ``raise Builtin(...)``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []

    def visit(node: ast.AST, function: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = function
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = child.name
            if isinstance(child, ast.Raise) and child.exc is not None:
                exc = child.exc.func if isinstance(child.exc, ast.Call) else child.exc
                rel = path.relative_to(root).as_posix()
                allowed = ALLOWED.union(
                    *(names for prefix, names in ALLOWED_UNDER.items() if rel.startswith(prefix))
                )
                if isinstance(exc, ast.Name) and exc.id in BUILTIN_EXCEPTIONS - allowed:
                    found.append((rel, function, child.lineno, exc.id))
            visit(child, name)

    visit(tree, "<module>")
    return found


def test_covered_modules_raise_no_bare_builtin_errors() -> None:
    modules = _covered_modules()
    assert len(modules) > 30  # the walk found the package, not an empty folder
    raises = [r for path in modules for r in _builtin_raises(path)]
    bare = [r for r in raises if (r[0], r[1]) not in KNOWN_BUILTIN_RAISES]
    assert not bare, (
        "raise a halfv.errors class (e.g. HalfvValueError, ConfigError) instead of a built-in: "
        + ", ".join(f"{m}:{line} {f}() raises {e}" for m, f, line, e in bare)
    )
    stale = KNOWN_BUILTIN_RAISES - {(r[0], r[1]) for r in raises}
    assert not stale, f"converted, remove from KNOWN_BUILTIN_RAISES: {sorted(stale)}"


def test_the_scan_sees_a_bare_raise(tmp_path: Path) -> None:
    fake = tmp_path / "mod.py"
    fake.write_text(
        "def f():\n    raise ValueError('x')\n\n"
        "def g():\n    raise HalfvError('y')\n\n"
        "def h():\n    raise NotImplementedError\n\n"
        "class C:\n    def m(self):\n        raise TypeError\n"
    )
    assert _builtin_raises(fake, tmp_path) == [
        ("mod.py", "f", 2, "ValueError"),
        ("mod.py", "m", 12, "TypeError"),
    ]


def test_every_error_is_a_halfv_error_and_keeps_its_builtin_base() -> None:
    classes = [
        obj
        for obj in vars(errors).values()
        if inspect.isclass(obj) and issubclass(obj, BaseException)
    ]
    assert set(errors.__all__) == {c.__name__ for c in classes}
    assert all(issubclass(c, errors.HalfvError) for c in classes)
    assert issubclass(errors.ConfigError, ValueError)
    assert issubclass(errors.ConfigTypeError, TypeError)
    assert issubclass(errors.ConfigFileNotFoundError, FileNotFoundError)
    assert issubclass(errors.ComponentTypeError, TypeError)
    assert issubclass(errors.DuplicateComponentError, ValueError)
    assert issubclass(errors.MissingDependencyError, ImportError)
    assert issubclass(errors.HalfvRuntimeError, RuntimeError)


def test_a_library_error_is_caught_as_halfv_error_and_as_value_error() -> None:
    with pytest.raises(halfv.HalfvError, match="ratio"):
        halfv.kept_count(10, 1.5)
    with pytest.raises(ValueError, match="ratio"):
        halfv.kept_count(10, 1.5)
