"""Qwen2.5-VL under transformers' ModelTesterMixin (halfv tester, used when the release's
own tests/models/qwen2_5_vl/test_modeling_qwen2_5_vl.py is not available; see prepare.py).

Tiny random config in the shape of transformers' Qwen2.5-VL tester, with 4 text layers so
that halfv's default schedule has both an IVR and an SSR stage. One image per sample of
an 8x8 patch grid (16 tokens after the 2x2 merge), between vision start/end tokens.
"""

import unittest

from transformers import (
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLModel,
    is_torch_available,
)
from transformers.testing_utils import require_torch, torch_device

from ...generation.test_utils import GenerationTesterMixin
from ...test_modeling_common import ModelTesterMixin, floats_tensor, ids_tensor

if is_torch_available():
    import torch

START, END, IMAGE_TOKEN, VIDEO_TOKEN = 3, 4, 5, 6  # low ids survive a vocabulary resize
PAD = 1
PATCH, TEMPORAL, GRID = 2, 2, 8


class Qwen2_5_VLHalfvTester:
    def __init__(self, parent, num_hidden_layers=4):
        self.parent = parent
        self.batch_size = 3
        self.is_training = True
        self.num_hidden_layers = num_hidden_layers
        self.vocab_size = 99
        self.hidden_size = 32
        self.num_attention_heads = 4
        self.text_config = {
            "model_type": "qwen2_5_vl_text",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": 2,
            "intermediate_size": 37,
            "hidden_act": "silu",
            "max_position_embeddings": 512,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [1, 1, 2]},
            "pad_token_id": PAD,
            "bos_token_id": 0,
            "eos_token_id": 2,
        }
        self.vision_config = {
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_heads": 4,
            "out_hidden_size": self.hidden_size,
            "patch_size": PATCH,
            "spatial_merge_size": 2,
            "temporal_patch_size": TEMPORAL,
            "window_size": 8,
            "fullatt_block_indexes": [0],
            "in_chans": 3,
        }
        self.num_image_tokens = GRID * GRID // 4
        self.seq_length = 7 + self.num_image_tokens + 2
        self.encoder_seq_length = self.seq_length

    def get_config(self):
        return Qwen2_5_VLConfig(
            text_config=self.text_config,
            vision_config=self.vision_config,
            image_token_id=IMAGE_TOKEN,
            video_token_id=VIDEO_TOKEN,
            vision_start_token_id=START,
            vision_end_token_id=END,
        )

    def prepare_config_and_inputs_for_common(self):
        config = self.get_config()
        pixel_values = floats_tensor([self.batch_size * GRID * GRID, 3 * TEMPORAL * PATCH * PATCH])
        input_ids = ids_tensor([self.batch_size, self.seq_length], self.vocab_size - 12) + 8
        input_ids[:, 1] = START
        input_ids[:, 2 : 2 + self.num_image_tokens] = IMAGE_TOKEN
        input_ids[:, 2 + self.num_image_tokens] = END
        mm_token_type_ids = (input_ids == IMAGE_TOKEN).long()
        attention_mask = torch.ones(input_ids.shape, dtype=torch.long).to(torch_device)
        grid = torch.tensor([[1, GRID, GRID]] * self.batch_size, device=torch_device)
        return config, {
            "pixel_values": pixel_values,
            "image_grid_thw": grid,
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "mm_token_type_ids": mm_token_type_ids,
        }


@require_torch
class Qwen2_5_VLHalfvModelTest(ModelTesterMixin, GenerationTesterMixin, unittest.TestCase):
    all_model_classes = (Qwen2_5_VLModel, Qwen2_5_VLForConditionalGeneration) if is_torch_available() else ()
    _is_composite = True

    def setUp(self):
        self.model_tester = Qwen2_5_VLHalfvTester(self)
