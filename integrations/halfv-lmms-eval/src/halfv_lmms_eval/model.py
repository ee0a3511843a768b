"""lmms-eval chat models that run a transformers VLM under ``halfv.apply``.

One class serves every backbone halfv has an adapter for (``AutoModelForImageTextToText``
+ ``AutoProcessor``); the family classes only add a check that the checkpoint is of the
family their name promises. Each ``generate_until`` call reports, through lmms-eval's
throughput log (``results["throughput"]``, keys ``avg_halfv_*``), what halfv did: visual
tokens before and after pruning, the prefill FLOPs ratio from ``handle.flops()`` and the
measured prefill time (the model's first forward of each ``generate``: vision encoder and
language-model prefill).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, cast

import torch
from lmms_eval.api.instance import GenerationResult, Instance, TokenCounts
from lmms_eval.api.model import lmms
from lmms_eval.models.model_utils.gen_metrics import log_metrics
from lmms_eval.protocol import ChatMessages
from loguru import logger
from torch import nn
from transformers import PreTrainedModel

import halfv
from halfv_lmms_eval.schedule import resolve_schedule, split_halfv_args

__all__ = [
    "HalfvInternVL",
    "HalfvLlava",
    "HalfvLlavaNext",
    "HalfvModel",
    "HalfvQwen2_5_VL",
]

_DTYPES = {
    "auto": "auto",
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float32": torch.float32,
}


class _PrefillTimer:
    """Wall time of the first forward of ``model`` after :meth:`arm` (the prefill)."""

    def __init__(self, model: nn.Module) -> None:
        self._model = model
        self._start: float | None = None
        self.seconds: float | None = None
        self._armed = False
        self._handles = [
            model.register_forward_pre_hook(self._pre),
            model.register_forward_hook(self._post),
        ]

    def _sync(self) -> None:
        device = next(self._model.parameters()).device
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def arm(self) -> None:
        self._armed = True
        self._start = None
        self.seconds = None

    def _pre(self, _module: nn.Module, _args: Any) -> None:
        if self._armed and self._start is None:
            self._sync()
            self._start = time.perf_counter()

    def _post(self, _module: nn.Module, _args: Any, _out: Any) -> None:
        if self._armed and self._start is not None and self.seconds is None:
            self._sync()
            self.seconds = time.perf_counter() - self._start
            self._armed = False

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


class HalfvModel(lmms):  # type: ignore[misc]  # lmms-eval ships no type information
    """A transformers VLM under halfv, for lmms-eval (``--model halfv``).

    Model arguments (``--model_args``): ``pretrained`` (hub id or folder), ``device``,
    ``device_map``, ``dtype`` (auto, bfloat16, float16, float32), ``attn_implementation``
    (sdpa or eager: halfv needs 4-D masks), ``batch_size``, ``max_new_tokens`` (default when
    the task sets none), ``trust_remote_code``; and halfv's: ``halfv=on|off``,
    ``halfv_config=path.toml``, ``halfv_<field>=value`` for any ``PruningConfig`` field.
    """

    is_simple = False
    #: model_type values this class accepts (None: any backbone halfv has an adapter for)
    families: ClassVar[tuple[str, ...] | None] = None

    def __init__(
        self,
        pretrained: str,
        *,
        device: str | None = None,
        device_map: str | None = None,
        dtype: str = "auto",
        attn_implementation: str = "sdpa",
        batch_size: int | str = 1,
        max_batch_size: int | None = None,
        max_new_tokens: int = 128,
        trust_remote_code: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        schedule_args = split_halfv_args(kwargs)
        if kwargs:
            msg = (
                f"unknown model arguments {sorted(kwargs)} for {type(self).__name__}: "
                "see halfv_lmms_eval.HalfvModel for the accepted ones"
            )
            raise ValueError(msg)
        if dtype not in _DTYPES:
            msg = f"dtype={dtype!r} is not supported: use one of {sorted(_DTYPES)}"
            raise ValueError(msg)
        if attn_implementation not in ("sdpa", "eager"):
            msg = (
                f"attn_implementation={attn_implementation!r}: halfv needs 4-D attention "
                "masks, use attn_implementation=sdpa (default) or eager"
            )
            raise ValueError(msg)
        del max_batch_size  # lmms-eval passes it to every model; batches here are fixed
        from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

        config = AutoConfig.from_pretrained(pretrained, trust_remote_code=trust_remote_code)
        if self.families is not None and config.model_type not in self.families:
            msg = (
                f"{pretrained!r} is a {config.model_type!r} checkpoint, but {type(self).__name__} "
                f"serves {list(self.families)}: use --model halfv (any supported backbone)"
            )
            raise ValueError(msg)
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self._device = torch.device(device)
        load: dict[str, Any] = {
            "dtype": _DTYPES[dtype],
            "attn_implementation": attn_implementation,
            "trust_remote_code": trust_remote_code,
        }
        if device_map is not None:
            load["device_map"] = device_map
        model = AutoModelForImageTextToText.from_pretrained(pretrained, **load).eval()
        if device_map is None:
            model = model.to(self._device)
        self._model: PreTrainedModel = model
        self.processor = AutoProcessor.from_pretrained(
            pretrained, trust_remote_code=trust_remote_code
        )
        self.processor.tokenizer.padding_side = "left"  # halfv batches need left padding
        self.adapter = halfv.get_adapter_for(model)  # fails early for unsupported backbones
        self.schedule = resolve_schedule(model, schedule_args)
        self.handle = None if self.schedule is None else halfv.apply(model, self.schedule)
        self._timer = _PrefillTimer(model)
        self._last_stats: halfv.PruneStats | None = None
        self.batch_size_per_gpu = int(batch_size)
        self.max_new_tokens = int(max_new_tokens)
        logger.info(
            f"halfv: {type(model).__name__} ({config.model_type}), "
            + ("unpruned (halfv=off)" if self.schedule is None else f"schedule {self.schedule!r}")
        )

    # lmms-eval reads these
    @property
    def model(self) -> PreTrainedModel:
        return self._model

    @property
    def tokenizer(self) -> Any:
        return self.processor.tokenizer

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def eot_token_id(self) -> int:
        return int(self.tokenizer.eos_token_id)

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        msg = (
            f"{type(self).__name__} answers generate_until tasks (MME, GQA, TextVQA, ...); "
            "loglikelihood tasks are not supported by the halfv models"
        )
        raise NotImplementedError(msg)

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        msg = (
            f"{type(self).__name__} answers single-round generate_until tasks; "
            "multi-round tasks are not supported by the halfv models"
        )
        raise NotImplementedError(msg)

    def generate_until(self, requests: list[Instance]) -> list[GenerationResult]:
        out: list[GenerationResult | None] = [None] * len(requests)
        records: list[dict[str, float]] = []
        prefill_seconds: list[float] = []
        generated = 0
        elapsed = 0.0
        for batch in self._batches(requests):
            start = time.perf_counter()
            texts, counts, prefill, sample_records = self._generate_batch(
                [requests[i] for i in batch]
            )
            elapsed += time.perf_counter() - start
            prefill_seconds.append(prefill)
            records.extend(sample_records)
            for i, text, (n_in, n_out) in zip(batch, texts, counts, strict=True):
                out[i] = GenerationResult(
                    text=text, token_counts=TokenCounts(input_tokens=n_in, output_tokens=n_out)
                )
                generated += n_out
        if requests:
            log_metrics(
                total_elapsed_time=elapsed,
                total_gen_tokens=generated,
                avg_speed=generated / elapsed if elapsed > 0 else 0.0,
                additional_metrics=self._summary(records, prefill_seconds, len(requests)),
            )
        assert all(result is not None for result in out)
        return [result for result in out if result is not None]

    def _batches(self, requests: Sequence[Instance]) -> list[list[int]]:
        """Consecutive runs of at most ``batch_size`` requests with equal gen kwargs."""
        batches: list[list[int]] = []
        for i, request in enumerate(requests):
            kwargs = request.args[2]
            if (
                batches
                and len(batches[-1]) < self.batch_size
                and requests[batches[-1][0]].args[2] == kwargs
            ):
                batches[-1].append(i)
            else:
                batches.append([i])
        return batches

    def _messages(self, request: Instance) -> list[dict[str, Any]]:
        _ctx, doc_to_messages, _kwargs, doc_id, task, split = request.args
        doc = self.task_dict[task][split][doc_id]
        messages = ChatMessages(messages=doc_to_messages(doc))
        _images, videos, audios = messages.extract_media()
        if videos or audios:
            msg = (
                f"task {task!r} gives {'videos' if videos else 'audio'}: the halfv lmms-eval "
                "models run image tasks only"
            )
            raise ValueError(msg)
        hf: list[dict[str, Any]] = messages.to_hf_messages()
        return hf

    def _generate_batch(
        self, requests: list[Instance]
    ) -> tuple[list[str], list[tuple[int, int]], float, list[dict[str, float]]]:
        conversations = [self._messages(r) for r in requests]
        texts = [
            self.processor.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
            for c in conversations
        ]
        images = [
            item["image"]
            for conversation in conversations
            for turn in conversation
            for item in turn["content"]
            if item["type"] == "image"
        ]
        inputs = self.processor(
            text=texts, images=images or None, padding=True, return_tensors="pt"
        ).to(self._device)
        gen_kwargs = dict(requests[0].args[2])
        until = _stop_strings(gen_kwargs.pop("until", None))
        generate_kwargs = _generate_kwargs(gen_kwargs, self.max_new_tokens)
        self._timer.arm()
        with torch.inference_mode():
            output = cast("Any", self.model).generate(  # transformers types it loosely
                **inputs, pad_token_id=self.tokenizer.pad_token_id, **generate_kwargs
            )
        prefill = self._timer.seconds
        if prefill is None:
            msg = "the model's forward never ran during generate: no prefill was timed"
            raise RuntimeError(msg)
        prompt_len = inputs["input_ids"].shape[1]
        new_tokens = output[:, prompt_len:]
        answers = self.processor.batch_decode(new_tokens, skip_special_tokens=True)
        answers = [_cut(answer, until) for answer in answers]
        pad = self.tokenizer.pad_token_id
        counts = [
            (int(inputs["attention_mask"][i].sum()), int((new_tokens[i] != pad).sum()))
            for i in range(len(requests))
        ]
        return answers, counts, prefill, self._sample_records(inputs["input_ids"])

    def _sample_records(self, input_ids: torch.Tensor) -> list[dict[str, float]]:
        """halfv's counts for each sample of the prefill that just ran."""
        if self.handle is None:  # unpruned: every visual token is kept, FLOPs ratio 1
            ids = torch.tensor(self.adapter.visual_token_ids(self.model), device=input_ids.device)
            counts = torch.isin(input_ids, ids).sum(dim=1).tolist()
            return [
                {"visual": float(n), "kept": float(n), "mean_per_layer": float(n), "flops": 1.0}
                for n in counts
            ]
        stats = self.handle.stats
        if stats is None or stats is self._last_stats:
            msg = (
                "halfv recorded no prefill for this generate call: the hooks did not run "
                "(is the model still under halfv.apply?)"
            )
            raise RuntimeError(msg)
        self._last_stats = stats
        records: list[dict[str, float]] = []
        for i, visual in enumerate(stats.visual_tokens):
            per_layer = stats.kept_visual_per_layer(i)
            report = self.handle.flops(sample=i)
            records.append(
                {
                    "visual": float(visual),
                    "kept": float(per_layer[-1]),
                    "mean_per_layer": sum(per_layer) / len(per_layer),
                    "flops": report.pruned_exact / report.full_exact,
                }
            )
        return records

    def _summary(
        self, records: list[dict[str, float]], prefill: list[float], requests: int
    ) -> dict[str, float]:
        def mean(key: str) -> float:
            return sum(r[key] for r in records) / len(records)

        summary = {
            "halfv_enabled": 0.0 if self.schedule is None else 1.0,
            "halfv_visual_tokens": mean("visual"),
            "halfv_kept_visual_tokens": mean("kept"),
            "halfv_visual_tokens_per_layer": mean("mean_per_layer"),
            "halfv_flops_ratio": mean("flops"),
            "halfv_prefill_s": sum(prefill) / len(prefill),
            "halfv_prefill_s_per_request": sum(prefill) / requests,
        }
        if self.schedule is not None:
            summary["halfv_ivr_layer"] = float(self.schedule.ivr_layer)
            summary["halfv_ivr_keep"] = self.schedule.ivr_keep
            if self.schedule.ssr_mode == "prune":
                summary["halfv_ssr_keep"] = self.schedule.ssr_keep
        return summary


def _stop_strings(until: object) -> list[str]:
    if until is None:
        return []
    if isinstance(until, str):
        return [until]
    if isinstance(until, list | tuple) and all(isinstance(u, str) for u in until):
        return list(until)
    msg = f"gen_kwargs until={until!r}: expected a string or a list of strings"
    raise ValueError(msg)


def _cut(text: str, until: list[str]) -> str:
    for stop in until:
        if stop:
            text = text.split(stop, 1)[0]
    return text


def _generate_kwargs(gen_kwargs: dict[str, Any], max_new_tokens: int) -> dict[str, Any]:
    """lmms-eval's task gen kwargs as ``generate`` arguments (temperature 0: greedy)."""
    temperature = float(gen_kwargs.pop("temperature", 0.0) or 0.0)
    out: dict[str, Any] = {
        "max_new_tokens": int(gen_kwargs.pop("max_new_tokens", max_new_tokens)),
        "num_beams": int(gen_kwargs.pop("num_beams", 1)),
    }
    top_p = gen_kwargs.pop("top_p", None)
    gen_kwargs.pop("do_sample", None)  # decided by temperature, as lmms-eval's own models do
    if temperature > 0:
        out.update(do_sample=True, temperature=temperature)
        if top_p is not None:
            out["top_p"] = float(top_p)
    else:
        out["do_sample"] = False
    out.update(gen_kwargs)
    return out


def _family(name: str, *model_types: str) -> Callable[[type[HalfvModel]], type[HalfvModel]]:
    def decorate(cls: type[HalfvModel]) -> type[HalfvModel]:
        cls.families = model_types
        cls.__doc__ = f"{name} under halfv (``--model halfv_{model_types[0]}``)."
        return cls

    return decorate


@_family("LLaVA-1.5", "llava")
class HalfvLlava(HalfvModel):
    pass


@_family("LLaVA-NeXT", "llava_next")
class HalfvLlavaNext(HalfvModel):
    pass


@_family("Qwen2.5-VL", "qwen2_5_vl")
class HalfvQwen2_5_VL(HalfvModel):
    pass


@_family("InternVL (-hf checkpoints)", "internvl")
class HalfvInternVL(HalfvModel):
    pass
