"""Train a zoo VLM's vision tower and projector (optionally LoRA on the LM) on VQA data.

The language model (SmolLM2) stays frozen. Batches mix the chosen datasets uniformly;
sample ``k`` of a run depends only on ``(seed, k)``. The loss is cross-entropy on the
answer tokens (and the closing ``<|im_end|>``) only, computed from the last few logits
(``logits_to_keep``), since left padding puts every answer at the end of its row. On CUDA
the forward runs under bf16 autocast. The learning rate warms up linearly, then follows a
cosine over the run's progress, where progress is the larger of ``step / steps`` and
``elapsed / max_minutes``, so the schedule also completes when the time limit ends a run.
With ``probe_weight > 0`` an answer probe (:mod:`halfv_lab.zoo.answer_probe`) adds a short
path from the answer to the vision tower. With ``label_weight > 0`` pooled per-image
heads (:mod:`halfv_lab.zoo.label_heads`) add the loss of naming what each image shows.
``init_from`` continues from a checkpoint (and the probe and heads saved beside it), e.g.
in a second device call. ``vision_only`` trains the vision tower and projector on those
auxiliary losses alone, without running the LM: many times more steps per minute, a
pre-training phase for the tower before the joint one. ``bank`` renders the
training splits once and keeps them on the device (:mod:`halfv_lab.zoo.batches`).
:func:`halfv_lab.zoo.save_trained` writes the result; :mod:`lab/scripts/train_vlm.py` is the CLI.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from halfv_lab.zoo.aids import TrainingAids, build_aids
from halfv_lab.zoo.answer_probe import AnswerProbe, ProjectorTap
from halfv_lab.zoo.batches import Batch, ItemBank, ItemStream
from halfv_lab.zoo.checkpoint import WEIGHTS_NAME, load_trained_tensors
from halfv_lab.zoo.evaluate import autocast_bf16, evaluate_all
from halfv_lab.zoo.families import VisionSize, build_family, trained_prefixes
from halfv_lab.zoo.label_heads import ImageLabelHeads, evaluate_label_heads
from halfv_lab.zoo.lora import add_lora, merge_lora
from halfv_lab.zoo.processing import IGNORE_INDEX, VQAProcessor
from halfv_lab.zoo.smollm2 import load_smollm2

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = ["TrainConfig", "TrainResult", "evaluate_all", "finish", "train"]

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Settings of one training run (the CLI flags of ``lab/scripts/train_vlm.py``).

    ``lm_dtype`` is the dtype of the frozen language model while training: ``"bfloat16"``
    (the default on CUDA; halves its memory traffic) or ``"float32"`` (the default on CPU).
    Trained parameters always stay float32; bf16 autocast is on whenever the device is
    CUDA or the LM is bfloat16.
    """

    family: str
    steps: int = 600
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: int = 30
    seed: int = 0
    device: str = "cuda"
    datasets: tuple[str, ...] = ("easyvqa", "synthetic")
    lora_rank: int = 0
    lora_alpha: float = 8.0
    lora_lr: float = 2e-4
    max_minutes: float | None = None
    log_every: int = 25
    eval_limit: int = 500
    eval_batch_size: int = 64
    num_workers: int = 0
    grad_checkpointing: bool = False
    lm_dtype: str | None = None
    probe_weight: float = 0.0
    label_weight: float = 0.0
    label_eval_limit: int = 1000
    vision_only: bool = False
    init_from: str | None = None
    bank: bool = False
    bank_limit: int | None = None
    vision: VisionSize = field(default_factory=VisionSize)

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            msg = f"steps and batch_size must be >= 1, got {self.steps} and {self.batch_size}"
            raise ValueError(msg)
        if self.lm_dtype is None:
            self.lm_dtype = "bfloat16" if self.device.startswith("cuda") else "float32"
        if self.lm_dtype not in ("float32", "bfloat16"):
            msg = f"lm_dtype must be 'float32' or 'bfloat16', got {self.lm_dtype!r}"
            raise ValueError(msg)
        if not self.datasets:
            msg = "datasets is empty; pass e.g. ('easyvqa', 'synthetic')"
            raise ValueError(msg)
        for name in ("probe_weight", "label_weight", "label_eval_limit"):
            if getattr(self, name) < 0:
                msg = f"{name} must be >= 0 (0 = off), got {getattr(self, name)}"
                raise ValueError(msg)
        if self.vision_only and self.probe_weight <= 0 and self.label_weight <= 0:
            msg = (
                "vision_only trains on the answer probe's and label heads' losses alone; "
                "also pass probe_weight > 0 or label_weight > 0"
            )
            raise ValueError(msg)
        if self.bank_limit is not None and (not self.bank or self.bank_limit < 1):
            msg = (
                f"bank_limit={self.bank_limit} needs bank=True and a value >= 1 "
                "(items banked per split); pass --bank, or drop --bank-limit"
            )
            raise ValueError(msg)


@dataclass
class TrainResult:
    """What a run produced: the model (LoRA merged), its processor and the numbers."""

    model: PreTrainedModel
    processor: VQAProcessor
    steps_done: int
    probe: AnswerProbe | None
    label_heads: ImageLabelHeads | None
    seconds: float
    losses: list[tuple[int, float]]
    metrics: dict[str, Any]


def _loss(model: PreTrainedModel, inputs: dict[str, torch.Tensor], family: str) -> torch.Tensor:
    labels = inputs.pop("labels")
    keep = int((labels != IGNORE_INDEX).sum(1).max().item()) + 1
    if family != "qwen2_5_vl":  # Qwen2.5-VL derives its 3-D positions from the mask itself
        mask = inputs["attention_mask"]
        inputs["position_ids"] = (mask.cumsum(-1) - 1).clamp_min(0)
    out = model(**inputs, logits_to_keep=keep, use_cache=False)
    logits = out.logits[:, :-1].float()
    target = labels[:, -(keep - 1) :]
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=IGNORE_INDEX
    )


def _losses(
    model: PreTrainedModel,
    proc: VQAProcessor,
    batch: Batch,
    *,
    cfg: TrainConfig,
    aux: TrainingAids,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss to minimise and its detached parts (``"lm"``, ``"probe"``, ``"labels"``).

    The probe and the label heads read the projector's output of the same forward pass;
    with ``cfg.vision_only`` the LM does not run, only the vision tower and projector do.
    """
    inputs = batch.inputs
    if aux.probe is None and aux.label_heads is None:
        lm_loss = _loss(model, inputs, cfg.family)
        return lm_loss, {"lm": lm_loss.detach()}
    with ProjectorTap(model, cfg.family) as tap:
        parts: dict[str, torch.Tensor] = {}
        if cfg.vision_only:  # the batch holds the vision inputs only
            model.model.get_image_features(**inputs)
        else:
            parts["lm"] = _loss(model, inputs, cfg.family)
        visual = tap.take(len(batch))
    total = parts.get("lm", visual.new_zeros((), dtype=torch.float32))
    if aux.probe is not None:
        parts["probe"] = aux.probe.loss(visual, proc.tokenizer, batch.questions, batch.answers)
        total = total + cfg.probe_weight * parts["probe"]
    if aux.label_heads is not None:
        parts["labels"] = aux.label_heads.loss(visual, batch.targets)
        total = total + cfg.label_weight * parts["labels"]
    return total, {k: v.detach().float() for k, v in parts.items()}


def _lr_factor(step: int, progress: float, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def _setup(
    cfg: TrainConfig,
) -> tuple[PreTrainedModel, VQAProcessor, list[dict[str, Any]], TrainingAids]:
    """Build the model (and training aids), freeze the LM, return the optimizer's groups."""
    if cfg.init_from:
        _check_init_from(cfg, Path(cfg.init_from))
    torch.manual_seed(cfg.seed)
    lm, tok = load_smollm2(torch.float32)
    model, proc = build_family(cfg.family, lm, tok, seed=cfg.seed, vision=cfg.vision)
    del lm
    model.requires_grad_(False)
    if cfg.lm_dtype == "bfloat16":  # the frozen LM (and its tied lm_head) only
        model.model.language_model.to(torch.bfloat16)
    prefixes = trained_prefixes(cfg.family)
    params = [p for n, p in model.named_parameters() if n.startswith(prefixes)]
    for p in params:
        p.requires_grad_(True)
    groups: list[dict[str, Any]] = [{"params": params, "base_lr": cfg.lr}]
    if cfg.lora_rank > 0:
        lora = add_lora(model, cfg.lora_rank, cfg.lora_alpha)
        groups.append({"params": lora, "base_lr": cfg.lora_lr})
    if cfg.init_from:
        load_trained_tensors(model, cfg.family, Path(cfg.init_from) / WEIGHTS_NAME)
        log.info("continuing from %s", cfg.init_from)
    aux = build_aids(
        model,
        probe_datasets=cfg.datasets if cfg.probe_weight > 0 else None,
        label_heads=cfg.label_weight > 0,
        init_from=cfg.init_from,
    )
    groups.extend({"params": list(m.parameters()), "base_lr": cfg.lr} for m in aux.modules())
    count = sum(p.numel() for g in groups for p in g["params"])
    log.info("%s: %d trainable parameters", cfg.family, count)
    if cfg.grad_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model, proc, groups, aux


def train(cfg: TrainConfig) -> TrainResult:
    """Build ``cfg.family`` from SmolLM2 and train its vision parts (and LoRA).

    Call :func:`finish` afterwards to merge LoRA and evaluate (after saving, since a
    checkpoint stores the unmerged LoRA factors).

    Returns:
        The trained model (eval mode, LoRA not merged yet), its processor and the loss
        curve; ``metrics`` holds only the run's config.
    """
    device = torch.device(cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        msg = f"device={cfg.device!r} but CUDA is not available; pass --device cpu"
        raise RuntimeError(msg)
    model, proc, groups, aux = _setup(cfg)
    params = [p for g in groups for p in g["params"]]
    source = _prepare(cfg, model, proc, aux, device)
    side: dict[str, list[float]] = {}  # the auxiliary losses since the last log line
    opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    limit_s = cfg.max_minutes * 60.0 if cfg.max_minutes else math.inf
    losses: list[tuple[int, float]] = []
    window: list[float] = []
    data_seconds = 0.0  # batch loading + preprocessing on the host, for the log
    start, step = time.monotonic(), 0
    while step < cfg.steps:
        elapsed = time.monotonic() - start
        if elapsed > limit_s:
            log.info("time limit (%s min) reached after %d steps", cfg.max_minutes, step)
            break
        factor = _lr_factor(step, max(step / cfg.steps, elapsed / limit_s), cfg.warmup)
        for group in opt.param_groups:
            group["lr"] = group["base_lr"] * factor
        t_data = time.monotonic()
        batch = source.next()
        data_seconds += time.monotonic() - t_data
        with autocast_bf16(device, device.type == "cuda" or cfg.lm_dtype == "bfloat16"):
            loss, parts = _losses(model, proc, batch, cfg=cfg, aux=aux)
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        values = dict(zip(parts, torch.stack(list(parts.values())).tolist(), strict=True))
        _check_finite(cfg.family, step, values)
        window.append(values.get("lm", sum(values.values())))
        for name in values.keys() - {"lm"}:
            side.setdefault(name, []).append(values[name])
        if step % cfg.log_every == 0 or step == cfg.steps:
            losses.append((step, round(sum(window) / len(window), 4)))
            rate = (time.monotonic() - start) / step
            shown = ", ".join(f"{k} {sum(v) / len(v):.4f}" for k, v in sorted(side.items()))
            log.info(
                "step %d loss %.4f%s lr %.2e %.3f s/step (%.3f s of it preparing the batch)",
                step,
                losses[-1][1],
                f" ({shown})" if shown else "",
                cfg.lr * factor,
                rate,
                data_seconds / step,
            )
            window, side = [], {}
    seconds = time.monotonic() - start
    del source
    if cfg.grad_checkpointing:
        model.gradient_checkpointing_disable()
    model.eval()
    for module in aux.modules():
        module.eval()
    info = _run_info(cfg, device)
    return TrainResult(model, proc, step, aux.probe, aux.label_heads, seconds, losses, info)


def _check_init_from(cfg: TrainConfig, folder: Path) -> None:
    """The checkpoint to continue must exist and match ``cfg``'s build (before building)."""
    if not (folder / WEIGHTS_NAME).is_file() or not (folder / "config.json").is_file():
        msg = (
            f"init_from={str(folder)!r} holds no {WEIGHTS_NAME} and config.json; pass a "
            "checkpoint folder written by lab/scripts/train_vlm.py"
        )
        raise FileNotFoundError(msg)
    config = json.loads((folder / "config.json").read_text())
    saw = (config.get("family"), config.get("vision"), config.get("lora", {}).get("rank", 0))
    want = (cfg.family, cfg.vision.to_dict(), cfg.lora_rank)
    if saw != want:
        msg = (
            f"init_from={str(folder)!r} was trained as family/vision/LoRA rank {saw}, "
            f"this run asks for {want}; pass the same --family, --vision-* and --lora-rank"
        )
        raise ValueError(msg)


def _check_finite(family: str, step: int, values: dict[str, float]) -> None:
    if not all(math.isfinite(v) for v in values.values()):
        shown = ", ".join(f"{k} {v}" for k, v in values.items())
        msg = (
            f"{family}: non-finite loss at step {step} ({shown}); "
            "lower --lr, --probe-weight or --label-weight"
        )
        raise FloatingPointError(msg)


def _prepare(
    cfg: TrainConfig,
    model: PreTrainedModel,
    proc: VQAProcessor,
    aux: TrainingAids,
    device: torch.device,
) -> ItemBank | ItemStream:
    """Move the model (and training aids) to ``device`` in train mode; return the batches."""
    torch.nn.Module.to(model, device)
    model.train()
    for module in aux.modules():
        module.to(device).train()
    kwargs: dict[str, Any] = {
        "batch_size": cfg.batch_size,
        "seed": cfg.seed,
        "device": device,
        "num_workers": cfg.num_workers,
        "vision_only": cfg.vision_only,
    }
    if cfg.bank:
        return ItemBank(cfg.datasets, proc, limit=cfg.bank_limit, **kwargs)
    return ItemStream(cfg.datasets, proc, **kwargs)


def _run_info(cfg: TrainConfig, device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {"config": _config_dict(cfg)}
    if device.type == "cuda":
        info["peak_gpu_memory_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        log.info("peak GPU memory %.1f GiB", info["peak_gpu_memory_gb"])
    return info


def finish(result: TrainResult, cfg: TrainConfig) -> TrainResult:
    """Merge LoRA into the LM and evaluate (call after saving the unmerged factors).

    The LM answers the first ``cfg.eval_limit`` questions of each split; the label heads,
    if any, name the first ``cfg.label_eval_limit`` images of each split
    (``metrics["labels/train"]``, ``metrics["labels/test"]``).
    """
    merge_lora(result.model)
    if result.label_heads is not None and cfg.label_eval_limit > 0:
        for split in ("train", "test"):
            scores = evaluate_label_heads(
                result.model,
                result.processor,
                result.label_heads,
                cfg.family,
                cfg.datasets,
                split=split,
                limit=cfg.label_eval_limit,
                batch_size=cfg.eval_batch_size,
            )
            result.metrics[f"labels/{split}"] = scores
            log.info("label heads, %s split: mean accuracy %.3f", split, scores["mean"])
    if cfg.eval_limit > 0:
        device = next(result.model.parameters()).device
        result.metrics.update(
            evaluate_all(
                result.model,
                result.processor,
                cfg.datasets,
                limit=cfg.eval_limit,
                batch_size=cfg.eval_batch_size,
                device=device,
                autocast=device.type == "cuda" or cfg.lm_dtype == "bfloat16",
            )
        )
    return result


def _config_dict(cfg: TrainConfig) -> dict[str, Any]:
    out = asdict(cfg)
    out["datasets"] = list(cfg.datasets)
    return out
