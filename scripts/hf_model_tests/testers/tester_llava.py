"""LLaVA under transformers' ModelTesterMixin (halfv tester, used when the release's own
tests/models/llava/test_modeling_llava.py is not available; see prepare.py).

Tiny random config in the shape of transformers' LLaVA tester, with 4 text layers so that
halfv's default schedule has both an IVR and an SSR stage.
"""

import unittest

from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaModel, is_torch_available
from transformers.testing_utils import require_torch, torch_device

from ...generation.test_utils import GenerationTesterMixin
from ...test_modeling_common import ModelTesterMixin, floats_tensor, ids_tensor

if is_torch_available():
    import torch

IMAGE_TOKEN = 0  # a low id, as in transformers' testers, so that resizing the vocabulary keeps it
PAD = 1


class LlavaHalfvTester:
    def __init__(self, parent, num_hidden_layers=4):
        self.parent = parent
        self.batch_size = 3
        self.is_training = True
        self.num_hidden_layers = num_hidden_layers
        self.vocab_size = 99
        self.hidden_size = 32
        self.num_attention_heads = 4
        self.text_config = {
            "model_type": "llama",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": 2,
            "intermediate_size": 37,
            "hidden_act": "gelu",
            "max_position_embeddings": 512,
            "initializer_range": 0.02,
            "pad_token_id": PAD,
        }
        self.vision_config = {
            "image_size": 8,
            "patch_size": 2,
            "num_channels": 3,
            "hidden_size": 32,
            "projection_dim": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "intermediate_size": 37,
            "initializer_range": 0.02,
        }
        self.num_image_tokens = (8 // 2) ** 2
        self.seq_length = 7 + self.num_image_tokens
        self.encoder_seq_length = self.seq_length

    def get_config(self):
        return LlavaConfig(
            text_config=self.text_config,
            vision_config=self.vision_config,
            image_token_index=IMAGE_TOKEN,
            projector_hidden_act="gelu",
            vision_feature_select_strategy="default",
            vision_feature_layer=-1,
            image_seq_length=self.num_image_tokens,
        )

    def prepare_config_and_inputs_for_common(self):
        config = self.get_config()
        pixel_values = floats_tensor([self.batch_size, 3, 8, 8])
        input_ids = ids_tensor([self.batch_size, self.seq_length], self.vocab_size - 4) + 2
        input_ids[:, 1 : 1 + self.num_image_tokens] = IMAGE_TOKEN
        attention_mask = torch.ones(input_ids.shape, dtype=torch.long).to(torch_device)
        return config, {"pixel_values": pixel_values, "input_ids": input_ids, "attention_mask": attention_mask}


@require_torch
class LlavaHalfvModelTest(ModelTesterMixin, GenerationTesterMixin, unittest.TestCase):
    all_model_classes = (LlavaModel, LlavaForConditionalGeneration) if is_torch_available() else ()
    _is_composite = True

    def setUp(self):
        self.model_tester = LlavaHalfvTester(self)
