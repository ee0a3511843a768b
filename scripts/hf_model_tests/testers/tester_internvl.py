"""InternVL under transformers' ModelTesterMixin (halfv tester, used when the release's own
tests/models/internvl/test_modeling_internvl.py is not available; see prepare.py).

Tiny random config in the shape of transformers' InternVL tester (Qwen2 language model),
with 4 text layers so that halfv's default schedule has both an IVR and an SSR stage. One
16x16 image per sample: 8x8 patches, 16 tokens after the 0.5 pixel shuffle.
"""

import unittest

from transformers import InternVLConfig, InternVLForConditionalGeneration, InternVLModel, is_torch_available
from transformers.testing_utils import require_torch, torch_device

from ...generation.test_utils import GenerationTesterMixin
from ...test_modeling_common import ModelTesterMixin, floats_tensor, ids_tensor

if is_torch_available():
    import torch

IMAGE_TOKEN = 0  # a low id, as in transformers' testers, so that resizing the vocabulary keeps it
PAD = 1
SIZE, PATCH = 16, 2


class InternVLHalfvTester:
    def __init__(self, parent, num_hidden_layers=4):
        self.parent = parent
        self.batch_size = 3
        self.is_training = True
        self.num_hidden_layers = num_hidden_layers
        self.vocab_size = 99
        self.hidden_size = 32
        self.num_attention_heads = 4
        self.text_config = {
            "model_type": "qwen2",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": 2,
            "intermediate_size": 37,
            "hidden_act": "silu",
            "max_position_embeddings": 512,
            "pad_token_id": PAD,
        }
        self.vision_config = {
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": [SIZE, SIZE],
            "patch_size": [PATCH, PATCH],
            "num_channels": 3,
        }
        self.num_image_tokens = (SIZE // PATCH // 2) ** 2
        self.seq_length = 7 + self.num_image_tokens
        self.encoder_seq_length = self.seq_length

    def get_config(self):
        return InternVLConfig(
            text_config=self.text_config,
            vision_config=self.vision_config,
            image_token_id=IMAGE_TOKEN,
            image_seq_length=self.num_image_tokens,
            downsample_ratio=0.5,
        )

    def prepare_config_and_inputs_for_common(self):
        config = self.get_config()
        pixel_values = floats_tensor([self.batch_size, 3, SIZE, SIZE])
        input_ids = ids_tensor([self.batch_size, self.seq_length], self.vocab_size - 4) + 2
        input_ids[:, 1 : 1 + self.num_image_tokens] = IMAGE_TOKEN
        attention_mask = torch.ones(input_ids.shape, dtype=torch.long).to(torch_device)
        return config, {"pixel_values": pixel_values, "input_ids": input_ids, "attention_mask": attention_mask}


@require_torch
class InternVLHalfvModelTest(ModelTesterMixin, GenerationTesterMixin, unittest.TestCase):
    all_model_classes = (InternVLModel, InternVLForConditionalGeneration) if is_torch_available() else ()
    _is_composite = True

    def setUp(self):
        self.model_tester = InternVLHalfvTester(self)
