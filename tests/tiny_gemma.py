"""A tiny random-init Gemma 3 VLM (sliding-window and full layers, sandwich blocks).

``build_gemma`` returns a :class:`tiny.Tiny` whose prompts use Gemma 3's layout: each
image is ``<start_of_image>``, ``mm_tokens_per_image`` image tokens, ``<end_of_image>``,
with ``token_type_ids`` 1 on the image tokens (Gemma 3 attends bidirectionally inside each
image in prefill). The sliding window is smaller than most test prompts. Norm weights and
the projector are randomised (transformers initialises them to zero), so the sandwich norms
and the image features matter.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from tiny import TEXT, Segment, Tiny, _left_pad, _text_ids

IMAGE_ID, BOI_ID, EOI_ID = 998, 996, 997
WINDOW = 12
PER_IMAGE = 16
#: Gemma 3's 5 local : 1 global pattern, shortened to 1 : 1
LAYER_TYPES = ["sliding_attention", "full_attention"]


def build_gemma(
    layers: int = 6, seed: int = 0, window: int = WINDOW, layer_types: list[str] | None = None
) -> Tiny:
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    torch.manual_seed(seed)
    types = layer_types or (LAYER_TYPES * layers)[:layers]
    text = {k: v for k, v in TEXT.items() if k != "num_hidden_layers"}
    cfg = Gemma3Config(
        text_config={
            **text,
            "num_hidden_layers": layers,
            "head_dim": 16,
            "query_pre_attn_scalar": 16,
            "sliding_window": window,
            "layer_types": types,
        },
        vision_config={
            "model_type": "siglip_vision_model",
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 64,
            "patch_size": 8,
        },
        mm_tokens_per_image=PER_IMAGE,
        image_token_index=IMAGE_ID,
        boi_token_index=BOI_ID,
        eoi_token_index=EOI_ID,
    )
    model = Gemma3ForConditionalGeneration(cfg).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name and param.dim() == 1:
                param.copy_(0.3 * torch.randn(param.shape, generator=gen))
        projector = model.model.multi_modal_projector.mm_input_projection_weight
        projector.copy_(torch.randn(projector.shape, generator=gen) / projector.shape[0] ** 0.5)
    per_image = PER_IMAGE

    def build(samples: Sequence[Sequence[Segment]], seed: int) -> dict[str, Any]:
        gen = torch.Generator().manual_seed(seed)
        rows, types, images = [], [], []
        for sample in samples:
            row: list[int] = []
            for seg in sample:
                if seg == "img":
                    row += [BOI_ID, *[IMAGE_ID] * per_image, EOI_ID]
                    images.append(torch.randn(3, 64, 64, generator=gen))
                else:
                    row += _text_ids(int(seg), gen)
            rows.append(row)
            types.append([int(t == IMAGE_ID) for t in row])
        out: dict[str, Any] = _left_pad(rows, types)
        out["token_type_ids"] = out.pop("mm_token_type_ids")
        if images:
            out["pixel_values"] = torch.stack(images)
        return out

    return Tiny("gemma3", model, per_image, build)
