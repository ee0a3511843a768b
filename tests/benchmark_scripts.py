"""Import a speed-benchmark script of the repository (``benchmarks/NAME.py``) as a module.

The speed benchmarks are repository scripts, not part of the installed package
(``docs/speed.md``); the tests run them in-process so that they cannot rot.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_script(script: str, folder: Path = BENCHMARKS) -> ModuleType:
    """Import ``folder/script`` (its folder first on ``sys.path``), once per path."""
    path = folder / script
    if not path.is_file():
        msg = f"no benchmark script {path}: the benchmarks live in {folder}"
        raise FileNotFoundError(msg)
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    name = path.stem
    if name in sys.modules and getattr(sys.modules[name], "__file__", None) == str(path):
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
