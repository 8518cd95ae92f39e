"""The ShapesCLIP training script: tokenizer, processor, hard negatives, seeded training, saved directory."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import CLIPModel, CLIPProcessor

from captum_gradeclip.zoo import shapes
from captum_gradeclip.zoo import train_shapes as ts

TINY = dict(width=32, vision_layers=1, text_layers=1, heads=2, projection_dim=16, batch_size=8, warmup=2)


def test_tokenizer_is_word_level_lowercased_with_bos_eos_and_unknowns():
    tokenizer = ts.build_tokenizer()
    batch = tokenizer(["a Red circle , a blue square", "a pink circle"], padding=True, return_tensors="pt")
    tokens = [tokenizer.convert_ids_to_tokens(row) for row in batch["input_ids"].tolist()]
    assert tokens[0] == ["<s>", "a", "red", "circle", ",", "a", "blue", "square", "</s>"]
    assert tokens[1][:5] == ["<s>", "a", "<unk>", "circle", "</s>"] and set(tokens[1][5:]) == {"<pad>"}
    assert batch["attention_mask"][1].tolist() == [1] * 5 + [0] * 4
    long = tokenizer(["a " * 100], truncation=True)["input_ids"][0]
    assert len(long) == ts.MAX_TEXT_LENGTH and long[-1] == tokenizer.eos_token_id


def test_training_pixels_equal_the_saved_processors_pixels():
    processor = ts.build_processor()
    scenes = shapes.make_scenes(range(3))
    expected = processor(images=[s.image for s in scenes], return_tensors="pt")["pixel_values"]
    got = ts.normalise(np.stack([s.array for s in scenes]))
    assert torch.allclose(got, expected, atol=1e-5)
    assert abs(float(got.mean())) < 0.5 and 0.5 < float(got.std()) < 2.0, "normalised"


def test_hard_negatives_rebind_the_scene_without_naming_the_same_objects():
    rng = np.random.default_rng(0)
    for seed in range(200):
        scene = shapes.make_scene(seed)
        negative = ts.hard_negative(list(scene.objects), rng)
        named = {p for p in shapes.all_prompts() if p in negative}
        assert negative != scene.caption and named != set(scene.prompts)
        assert negative.count(" a ") + 1 == len(scene.objects), "as many objects as the scene"
        assert sorted(negative.split()) != sorted(scene.caption.split()) or len(scene.objects) > 1


def test_batches_have_soft_targets_on_the_present_objects():
    config = ts.TrainConfig(**TINY)
    prompts = shapes.all_prompts()
    pixels, captions, negatives, targets = ts.sample_batch(
        np.random.default_rng(1), config, {p: i for i, p in enumerate(prompts)}
    )
    assert pixels.shape == (8, 3, 64, 64) and len(captions) == len(negatives) == 8
    assert torch.allclose(targets.sum(-1), torch.ones(8))
    for caption, row in zip(captions, targets, strict=True):
        assert {prompts[i] for i in row.nonzero().flatten().tolist()} == {p for p in prompts if p in caption}


def test_training_is_seeded_and_learns(tmp_path):
    config = ts.TrainConfig(**TINY, steps=12, lr=3e-3)
    model_a, _, losses = ts.train(config, progress=False)
    model_b, _, _ = ts.train(config, progress=False)
    params = [dict(m.named_parameters()) for m in (model_a, model_b)]
    assert all(torch.equal(params[0][k], params[1][k]) for k in params[0])
    inits = [dict(ts.build_model(ts.TrainConfig(**{**TINY, "seed": s})).named_parameters()) for s in (0, 0, 1)]
    assert all(torch.equal(inits[0][k], inits[1][k]) for k in inits[0])
    assert not any(torch.equal(inits[0][k], inits[2][k]) for k in inits[0] if k.endswith("q_proj.weight"))
    assert not model_a.training
    assert np.mean(losses[-4:]) < np.mean(losses[:4]), losses


def test_main_writes_a_loadable_directory_with_its_settings(tmp_path, capsys):
    out = tmp_path / "model"
    ts.main(
        ["--out", str(out), "--steps", "2", "--batch-size", "4", "--no-eval", "--threads", "1",
         "--set", "width=32", "--set", "vision_layers=1", "--set", "text_layers=1", "--set", "heads=2",
         "--set", "object_weights=[0.5,0.5,0.0]"]
    )  # fmt: skip
    model = CLIPModel.from_pretrained(out, local_files_only=True)
    processor = CLIPProcessor.from_pretrained(out, local_files_only=True)
    assert model.config.vision_config.hidden_size == 32 and (out / "model.safetensors").is_file()
    assert processor.tokenizer("a red circle")["input_ids"][1:4] == processor.tokenizer.convert_tokens_to_ids(
        ["a", "red", "circle"]
    )
    info = json.loads((out / "training.json").read_text())
    assert info["config"]["steps"] == 2 and info["config"]["object_weights"] == [0.5, 0.5, 0.0]
    assert "wrote" in capsys.readouterr().out


def test_main_rejects_bad_settings(tmp_path):
    with pytest.raises(SystemExit) as info:
        ts.main(["--out", str(tmp_path), "--set", "depth=3"])
    assert info.value.code == 2
    with pytest.raises(SystemExit):
        ts.main(["--out", str(tmp_path), "--steps", "0"])
