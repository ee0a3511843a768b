"""A training aid: classify the answer straight from the projected visual tokens.

The zoo's vision towers learn from scratch, and the answer loss reaches them only through
SmolLM2's 30 frozen layers. With that long path alone they learn colour (any single token
tells it) but little of shape, count or position in the steps a device call allows. The
answer probe adds a short path: a question encoder (SmolLM2's frozen token embeddings, a
learned position table and a token-wise MLP) forms queries that cross-attend to the
visual tokens the projector hands to the LM, and a small MLP names the answer from a fixed
vocabulary (every answer the training datasets can give). Its cross-entropy is added to the
LM loss with weight ``TrainConfig.probe_weight``.

The probe reads the projector's output through a forward hook, so it trains exactly the
features the LM sees and costs no second vision pass. It is not part of a checkpoint's
model: ``save_probe`` writes it beside the checkpoint (``probe.safetensors``, kept out of
git) only so that a continued run (``--init-from``) starts from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from halfv_lab.data import answer_vocab
from halfv_lab.zoo.checkpoint import load_beside, save_beside
from halfv_lab.zoo.evaluate import normalize_answer

if TYPE_CHECKING:
    from torch.utils.hooks import RemovableHandle
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "PROBE_NAME",
    "AnswerProbe",
    "ProjectorTap",
    "build_probe",
    "load_probe",
    "probe_vocab",
    "save_probe",
]

PROBE_NAME = "probe.safetensors"
"""File name of a saved probe inside a checkpoint folder (not committed)."""

_PROJECTOR: dict[str, str] = {
    "llava": "model.multi_modal_projector",
    "internvl": "model.multi_modal_projector",
    "qwen2_5_vl": "model.visual.merger",
}


def probe_vocab(datasets: Sequence[str]) -> tuple[str, ...]:
    """Every normalised answer of ``datasets``, in a fixed order (the probe's classes)."""
    seen: dict[str, None] = {}
    for name in datasets:
        for answer in answer_vocab(name):
            seen.setdefault(normalize_answer(answer), None)
    return tuple(seen)


class AnswerProbe(nn.Module):
    """Question-conditioned attention pooling of visual tokens, then an answer classifier.

    Everything runs in float32 with autocast off and with explicit attention maths (no
    masks, no fused kernels): the probe is tiny next to the LM, and a NaN here would
    poison the tower it trains.

    Args:
        embeddings: the LM's input embedding table (copied, frozen).
        answers: the answer vocabulary (normalised strings).
        heads: attention heads of the cross-attention.
        queries: query vectors per question (several let it attend to several places).
        max_question_tokens: longest question the position table covers.
    """

    def __init__(
        self,
        embeddings: torch.Tensor,
        answers: Sequence[str],
        *,
        heads: int = 8,
        queries: int = 4,
        max_question_tokens: int = 48,
    ) -> None:
        super().__init__()
        dim = embeddings.shape[1]
        if dim % heads:
            msg = f"heads={heads} must divide the embedding width {dim}"
            raise ValueError(msg)
        self.answers = tuple(answers)
        self.index = {a: i for i, a in enumerate(self.answers)}
        self.max_question_tokens = max_question_tokens
        self.heads, self.queries = heads, queries
        self.token_table: torch.Tensor
        self.register_buffer("token_table", embeddings.detach().float().clone(), persistent=False)
        self.positions = nn.Parameter(torch.randn(max_question_tokens, dim) * 0.02)
        self.token_mlp = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU())
        self.query_heads = nn.Linear(dim, queries * dim)
        self.visual_norm = nn.LayerNorm(dim)
        self.keys = nn.Linear(dim, dim)
        self.values = nn.Linear(dim, dim)
        self.classifier = nn.Sequential(
            nn.LayerNorm((queries + 1) * dim),
            nn.Linear((queries + 1) * dim, 2 * dim),
            nn.GELU(),
            nn.Linear(2 * dim, len(self.answers)),
        )

    def encode_questions(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` question token ids and mask -> ``[B, dim]`` question vectors.

        Each token's embedding plus its position goes through an MLP before the masked
        mean, so the vector depends on word order ("is A left of B").
        """
        x = self.token_mlp(self.token_table[ids] + self.positions[: ids.shape[1]])
        weights = mask.unsqueeze(-1).to(x.dtype)
        out: torch.Tensor = (x * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        return out

    def pool(self, question: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        """Multi-head attention of ``queries`` question-made queries over the visual tokens."""
        b, n, dim = visual.shape
        h, d = self.heads, dim // self.heads
        v = self.visual_norm(visual)
        q = self.query_heads(question).view(b, self.queries, h, d).transpose(1, 2)
        k = self.keys(v).view(b, n, h, d).transpose(1, 2)
        val = self.values(v).view(b, n, h, d).transpose(1, 2)
        attn = torch.softmax(q @ k.transpose(-1, -2) / d**0.5, dim=-1)
        pooled: torch.Tensor = (attn @ val).transpose(1, 2).reshape(b, self.queries, dim)
        return pooled

    def forward(self, visual: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Answer logits ``[B, answers]`` from visual tokens ``[B, N, dim]`` and questions."""
        with torch.autocast(visual.device.type, enabled=False):
            question = self.encode_questions(ids, mask)
            pooled = self.pool(question, visual.float())
            logits: torch.Tensor = self.classifier(
                torch.cat([question.unsqueeze(1), pooled], 1).flatten(1)
            )
        return logits

    def targets(self, answers: Sequence[str], device: torch.device) -> torch.Tensor:
        """Class indices of ``answers`` (-100 for an answer outside the vocabulary)."""
        rows = [self.index.get(normalize_answer(a), -100) for a in answers]
        return torch.tensor(rows, dtype=torch.long, device=device)

    def tokenize(
        self, tokenizer: PreTrainedTokenizerBase, questions: Sequence[str], device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded question ids and mask, cut at ``max_question_tokens``."""
        if not questions:
            msg = "no questions to tokenize: pass at least one"
            raise ValueError(msg)
        rows = tokenizer(list(questions), add_special_tokens=False)["input_ids"]
        cut = [torch.tensor(r[: self.max_question_tokens] or [0], dtype=torch.long) for r in rows]
        ids = pad_sequence(cut, batch_first=True)
        lengths = torch.tensor([min(len(r), self.max_question_tokens) for r in rows])
        mask = torch.arange(ids.shape[1]) < lengths[:, None]
        return ids.to(device), mask.to(device)

    def loss(
        self,
        visual: torch.Tensor,
        tokenizer: PreTrainedTokenizerBase,
        questions: Sequence[str],
        answers: Sequence[str],
    ) -> torch.Tensor:
        """Cross-entropy of the probe on one batch (``visual``: ``[B, N, dim]``)."""
        ids, mask = self.tokenize(tokenizer, questions, visual.device)
        logits = self(visual, ids, mask)
        return F.cross_entropy(logits, self.targets(answers, visual.device))


class ProjectorTap:
    """Keep the last output of a zoo model's projector as ``[images, tokens, dim]``."""

    def __init__(self, model: PreTrainedModel, family: str) -> None:
        if family not in _PROJECTOR:
            msg = f"unknown zoo family {family!r}; choose one of {', '.join(_PROJECTOR)}"
            raise ValueError(msg)
        self.module = model.get_submodule(_PROJECTOR[family])
        self.output: torch.Tensor | None = None
        self._handle: RemovableHandle | None = None

    def __enter__(self) -> Self:
        self._handle = self.module.register_forward_hook(self._keep)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.remove()
        self._handle = None
        self.output = None

    def _keep(self, module: nn.Module, args: Any, output: Any) -> None:
        self.output = output[0] if isinstance(output, tuple) else output

    def take(self, images: int) -> torch.Tensor:
        """The captured features, one row of tokens per image; clears the capture."""
        if self.output is None:
            msg = "the projector did not run in this forward pass; was an image given?"
            raise RuntimeError(msg)
        out, self.output = self.output, None
        return out.reshape(images, -1, out.shape[-1])


def save_probe(probe: AnswerProbe, folder: str | Path) -> Path:
    """Write the probe's trained weights to ``folder / PROBE_NAME``."""
    return save_beside(probe, Path(folder) / PROBE_NAME, "\n".join(probe.answers))


def load_probe(probe: AnswerProbe, folder: str | Path) -> bool:
    """Load ``folder / PROBE_NAME`` into ``probe`` if it exists with the same answers."""
    return load_beside(probe, Path(folder) / PROBE_NAME, "\n".join(probe.answers))


def build_probe(model: PreTrainedModel, datasets: Sequence[str]) -> AnswerProbe:
    """An answer probe over ``model``'s LM embeddings and the answers of ``datasets``."""
    table = model.get_input_embeddings().weight
    if not isinstance(table, torch.Tensor):
        msg = f"{type(model).__name__}'s input embeddings have no weight tensor"
        raise TypeError(msg)
    return AnswerProbe(table, probe_vocab(datasets))
