"""A tiny random-init PaliGemma 2 (Gemma-2 decoder) for the adapter tests.

Gemma-2's layers alternate sliding-window (window :data:`WINDOW`, shorter than the test
prompts) and full attention; blocks are sandwich blocks; ``softcap`` sets
``attn_logit_softcapping`` (``None`` for SDPA, which transformers refuses to run with a
soft cap). Norm weights are randomised (transformers initialises them to zero) so the
sandwich norms matter; the text queries and keys are scaled up so that the attention logits
reach the soft cap. Prompts are laid out as ``processing_paligemma.py`` does (the
builder of :func:`tiny_easy.build_paligemma`).
"""

from __future__ import annotations

import torch

from tiny import TEXT, Tiny
from tiny_easy import IMAGE_ID, VISION, build_paligemma

WINDOW = 12


def build_paligemma2(layers: int = 6, seed: int = 0, softcap: float | None = 1.0) -> Tiny:
    from transformers import PaliGemmaConfig, PaliGemmaForConditionalGeneration

    base = build_paligemma(layers=layers, seed=seed)  # its prompt builder (16 tokens/image)
    torch.manual_seed(seed)
    size = 56
    cfg = PaliGemmaConfig(
        vision_config={
            **VISION,
            "model_type": "siglip_vision_model",
            "num_attention_heads": 2,
            "image_size": size,
            "patch_size": 14,
            "projection_dim": TEXT["hidden_size"],
        },
        text_config={
            **TEXT,
            "num_hidden_layers": layers,
            "model_type": "gemma2",
            "head_dim": 16,
            "query_pre_attn_scalar": 16,
            "sliding_window": WINDOW,
            "attn_logit_softcapping": softcap,
            "final_logit_softcapping": None,
        },
        image_token_index=IMAGE_ID,
        projection_dim=TEXT["hidden_size"],
    )
    model = PaliGemmaForConditionalGeneration(cfg).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name and param.dim() == 1:
                param.copy_(0.3 * torch.randn(param.shape, generator=gen))
            elif name.endswith(("q_proj.weight", "k_proj.weight")) and "language" in name:
                param.mul_(10.0)  # attention logits of order 1, where a cap of 1 bites
    return Tiny("paligemma2", model, base.visual_per_image, base.build)
