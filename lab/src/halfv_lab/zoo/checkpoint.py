"""Save and load the trained parts of a zoo VLM (vision tower, projector, optional LoRA).

A checkpoint folder holds ``weights.safetensors`` (float16, no pickle), ``config.json``
(family, vision size, LoRA settings, versions) and, written by the training script,
``card.md`` and ``metrics.json``, and, written by ``halfv calibrate`` from the checkpoint's
measured lifecycle (``lab/scripts/gpu_accuracy.sh``), ``schedule.json``: the pruning schedule
calibrated for it (:func:`calibrated_schedule`). The language model is never stored: it is
rebuilt from SmolLM2 (:func:`halfv_lab.zoo.load_smollm2`). The shipped checkpoints live in
``halfv_lab/zoo/checkpoints/<family>/``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from halfv_lab.zoo.families import FAMILIES, VisionSize, build_family, trained_prefixes
from halfv_lab.zoo.lora import add_lora, lora_state_dict, merge_lora
from halfv_lab.zoo.processing import VQAProcessor
from halfv_lab.zoo.smollm2 import load_smollm2

if TYPE_CHECKING:
    from transformers import LlamaForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

    from halfv.config import PruningConfig

__all__ = [
    "CHECKPOINT_DIR",
    "MAX_FILE_BYTES",
    "SCHEDULE_NAME",
    "WEIGHTS_NAME",
    "ZOO_GRID_SHARE",
    "calibrated_schedule",
    "checkpoint_path",
    "load_beside",
    "load_trained",
    "load_trained_tensors",
    "save_beside",
    "save_trained",
    "trained_state_dict",
    "zoo_base_schedule",
]

log = logging.getLogger(__name__)

CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints"
"""Where the shipped checkpoints live: ``CHECKPOINT_DIR / <family>``."""
WEIGHTS_NAME = "weights.safetensors"
SCHEDULE_NAME = "schedule.json"
MAX_FILE_BYTES = 15_000_000
"""Size limit of one checkpoint file (they are committed to git)."""
_FORMAT = 1
ZOO_GRID_SHARE = 0.7
"""``grid_share`` of the zoo's schedules: the IVR coverage step is seeded with an even
stride of 70 % of the budget (docs/policies.md, "Grid seeds"; measured in docs/benchmarks.md,
"IVR ablation")."""
_ZOO_LAYERS = 30  # SmolLM2-135M, the language model of every zoo family


def save_beside(module: torch.nn.Module, path: str | Path, signature: str) -> Path:
    """Write ``module``'s state to ``path`` (safetensors), tagged with ``signature``.

    For training aids kept beside a checkpoint (answer probe, label heads): the
    signature says what the module was built for, so :func:`load_beside` refuses a file
    made for another build.
    """
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    save_file(state, str(path), metadata={"signature": signature})
    return Path(path)


def load_beside(module: torch.nn.Module, path: str | Path, signature: str) -> bool:
    """Load ``path`` into ``module`` if it exists and was saved with ``signature``."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    if not Path(path).is_file():
        return False
    with safe_open(str(path), "pt") as f:
        if (f.metadata() or {}).get("signature") != signature:
            return False
    module.load_state_dict(load_file(str(path)))
    return True


def checkpoint_path(family: str) -> Path:
    """The shipped checkpoint folder of ``family``."""
    if family not in FAMILIES:
        msg = f"unknown zoo family {family!r}; choose one of {', '.join(FAMILIES)}"
        raise ValueError(msg)
    return CHECKPOINT_DIR / family


def calibrated_schedule(family: str, checkpoint: str | Path | None = None) -> PruningConfig | None:
    """The pruning schedule calibrated for a checkpoint, or ``None`` if it has none.

    ``halfv calibrate`` writes it from the checkpoint's profiled TME lifecycle and KL probe
    (the backbone's saturation detector), so it can differ from the adapter's default:
    the shipped ones keep their adapter's IVR layer with grid seeds
    (:func:`zoo_base_schedule`), and freeze the visual tokens only where the probe finds
    them idle (``internvl`` from layer 24, ``qwen2_5_vl`` from 27) or, where it never does
    (``llava``), have no SSR stage (docs/models.md lists each file's command).

    Args:
        family: one of :data:`halfv_lab.zoo.FAMILIES`.
        checkpoint: checkpoint folder (default: the shipped one, :func:`checkpoint_path`).

    Raises:
        ValueError: the file exists but is not a valid schedule (the message says why).
    """
    from halfv.config import load_config

    folder = Path(checkpoint) if checkpoint is not None else checkpoint_path(family)
    path = folder / SCHEDULE_NAME
    return load_config(path) if path.is_file() else None


def zoo_base_schedule(family: str) -> PruningConfig:
    """The base the zoo's rule calibrates each checkpoint's ``schedule.json`` from.

    The family adapter's reference schedule scaled to SmolLM2's 30 layers, with the IVR
    coverage step seeded by a grid (``grid_share`` = :data:`ZOO_GRID_SHARE`). The rule
    (``lab/scripts/gpu_accuracy.sh``, docs/models.md) then runs ``halfv calibrate
    --base-config <this> --freeze-below 0.01 --keep-ivr --unsaturated none`` on the
    checkpoint's profile.
    """
    from halfv.adapters.base import scale_schedule
    from halfv.config import PruningConfig
    from halfv.plugins import get_adapter

    adapter = get_adapter(checkpoint_path(family).name)
    reference = getattr(adapter, "reference_schedule", None)
    layers = getattr(adapter, "reference_layers", None)
    if not isinstance(reference, PruningConfig) or not isinstance(layers, int):
        msg = f"the {family} adapter has no reference schedule to scale"
        raise TypeError(msg)
    scaled = scale_schedule(reference, layers, _ZOO_LAYERS)
    options = {**scaled.ivr_policy_options, "grid_share": ZOO_GRID_SHARE}
    return PruningConfig.model_validate({**scaled.model_dump(), "ivr_policy_options": options})


def trained_state_dict(model: PreTrainedModel, family: str) -> dict[str, torch.Tensor]:
    """The trained tensors of ``model``: vision tower, projector and LoRA factors."""
    prefixes = trained_prefixes(family)
    out = {k: v for k, v in model.state_dict().items() if k.startswith(prefixes)}
    out.update(lora_state_dict(model))
    if not out:
        msg = f"no parameters under {prefixes} in {type(model).__name__}: is it a {family} model?"
        raise ValueError(msg)
    return out


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save_trained(
    model: PreTrainedModel,
    family: str,
    out_dir: str | Path,
    *,
    vision: VisionSize | None = None,
    lora_rank: int = 0,
    lora_alpha: float = 8.0,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write the trained parts of ``model`` to ``out_dir`` (float16 safetensors + config).

    Args:
        model: a zoo VLM, possibly still holding unmerged LoRA layers.
        family: its family name.
        out_dir: the checkpoint folder (created if needed).
        vision: the vision size the model was built with (default :class:`VisionSize`).
        lora_rank: LoRA rank used in training (0 = none).
        lora_alpha: LoRA alpha used in training.
        extra: more JSON-serialisable fields for ``config.json`` (e.g. the seed).

    Returns:
        The path of the weights file.
    """
    from safetensors.torch import save_file
    from transformers import __version__ as tf_version

    from halfv._version import __version__ as halfv_version

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {
        k: v.detach().to("cpu", torch.float16).contiguous()
        for k, v in trained_state_dict(model, family).items()
    }
    n_lora = sum(k.endswith((".lora_a", ".lora_b")) for k in tensors)
    if (n_lora > 0) != (lora_rank > 0):
        msg = f"lora_rank={lora_rank} but the model holds {n_lora} LoRA tensors; pass the rank used"
        raise ValueError(msg)
    weights = out / WEIGHTS_NAME
    save_file(tensors, str(weights), metadata={"family": family, "format": str(_FORMAT)})
    weights.chmod(0o644)
    size = weights.stat().st_size
    if size > MAX_FILE_BYTES:
        log.warning("%s is %d bytes, over the %d-byte limit for git", weights, size, MAX_FILE_BYTES)
    config = {
        "format": _FORMAT,
        "family": family,
        "vision": (vision or VisionSize()).to_dict(),
        "lora": {"rank": lora_rank, "alpha": lora_alpha, "targets": ["q_proj", "v_proj"]},
        "dtype": "float16",
        "num_tensors": len(tensors),
        "num_parameters": sum(t.numel() for t in tensors.values()),
        "weights_sha256": _sha256(weights),
        "halfv_version": halfv_version,
        "transformers_version": tf_version,
        **(extra or {}),
    }
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return weights


def load_trained_tensors(model: PreTrainedModel, family: str, weights: str | Path) -> None:
    """Load a checkpoint's tensors into ``model`` as built (LoRA layers added, unmerged).

    Raises:
        ValueError: the file's tensor names differ from the model's trained ones.
    """
    from safetensors.torch import load_file

    state = load_file(str(weights))
    expected = set(trained_state_dict(model, family))
    missing, unexpected = expected - set(state), set(state) - expected
    if missing or unexpected:
        msg = (
            f"{weights} does not match the {family} model it is loaded into: "
            f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}; "
            "build it with the checkpoint's vision size and LoRA rank, or retrain it "
            "with this halfv version"
        )
        raise ValueError(msg)
    model.load_state_dict(state, strict=False)


def load_trained(
    family: str,
    checkpoint: str | Path | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    lm: LlamaForCausalLM | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
) -> tuple[PreTrainedModel, VQAProcessor]:
    """Build ``family`` and load its trained vision tower, projector and LoRA (merged).

    Args:
        family: one of :data:`halfv_lab.zoo.FAMILIES`.
        checkpoint: checkpoint folder (default: the shipped one, :func:`checkpoint_path`).
        dtype: dtype of the returned model.
        device: device of the returned model (default CPU).
        lm: an already loaded SmolLM2 (float32) to copy from, saving a reload.
        tokenizer: its tokenizer (needed when ``lm`` is given).

    Returns:
        ``(model, processor)``, the model in eval mode.

    Raises:
        FileNotFoundError: no checkpoint exists; the message says how to train one.
    """
    folder = Path(checkpoint) if checkpoint is not None else checkpoint_path(family)
    weights, config_file = folder / WEIGHTS_NAME, folder / "config.json"
    if not weights.is_file() or not config_file.is_file():
        msg = (
            f"no trained {family} checkpoint at {folder} (needs {WEIGHTS_NAME} and config.json). "
            f"Train one: python lab/scripts/train_vlm.py --family {family} --out {folder} "
            "(on a GPU: bash lab/scripts/gpu_train.sh), or build an untrained model with "
            "halfv_lab.zoo.build_family()"
        )
        raise FileNotFoundError(msg)
    config = json.loads(config_file.read_text())
    if config.get("family") != family:
        msg = f"{config_file} is a {config.get('family')!r} checkpoint, not {family!r}"
        raise ValueError(msg)
    if lm is None or tokenizer is None:
        lm, tokenizer = load_smollm2(torch.float32)
    vision = VisionSize(**config["vision"])
    model, proc = build_family(family, lm, tokenizer, seed=0, vision=vision)
    lora = config.get("lora", {})
    if int(lora.get("rank", 0)) > 0:
        add_lora(model, int(lora["rank"]), float(lora["alpha"]), tuple(lora["targets"]))
    load_trained_tensors(model, family, weights)
    merge_lora(model)
    torch.nn.Module.to(model, device=device, dtype=dtype)
    model.eval()
    return model, proc
