"""The ShapesCLIP training script: tokenizer, processor, hard negatives, seeded training, saved directory."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPModel, CLIPProcessor

from captum_gradeclip.zoo import shapes, shapes_batch
from tools import train_shapes as ts

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


@pytest.mark.parametrize("backbone", ["vit", "resnet"])
def test_caption_table_rows_are_the_processors_tokens(backbone):
    if backbone == "resnet":
        pytest.importorskip("open_clip")
    processor = ts.build_processor(backbone=backbone)
    table = ts.CaptionTable(processor)
    pairs = shapes_batch.sample_pairs(np.random.default_rng(0).integers(1, 4, 40), np.random.default_rng(1))
    captions = [shapes.caption([ts.PAIRS[i] for i in row if i >= 0]) for row in pairs]
    expected = processor(text=captions, padding="max_length", max_length=table.input_ids.shape[1], return_tensors="pt")
    got = table(torch.as_tensor(pairs))
    assert torch.equal(got["input_ids"], expected["input_ids"])
    assert torch.equal(got["attention_mask"], expected["attention_mask"])
    assert table.input_ids.shape[0] == 24 + 24**2 + 24**3


def test_torch_batches_hold_targets_negatives_and_the_processors_pixels():
    config = ts.TrainConfig(**{**TINY, "image_size": 112, "batch_size": 32})
    processor = ts.build_processor(112)
    table = ts.CaptionTable(processor)
    rng, generator = np.random.default_rng(2), torch.Generator().manual_seed(2)
    pixels, pairs, negatives, targets = ts.sample_batch_torch(
        rng, generator, config, table, lambda images: ts.normalise(images, 112)
    )
    assert pixels.shape == (32, 3, 112, 112) and torch.allclose(targets.sum(-1), torch.ones(32))
    for row, negative, target in zip(pairs.tolist(), negatives.tolist(), targets, strict=True):
        present = [i for i in row if i >= 0]
        assert set(target.nonzero().flatten().tolist()) == set(present)
        named = [i for i in negative if i >= 0]
        assert len(named) == len(present) and named != present and len(set(named)) == len(named)
    # the same scenes through the saved processor (PIL's 8-bit bilinear resize): within one grey level
    again = shapes_batch.render_batch(pairs, torch.Generator().manual_seed(2))
    images = [Image.fromarray(a) for a in again.images.permute(0, 2, 3, 1).numpy()]
    expected = processor(images=images, return_tensors="pt")["pixel_values"]
    one_level = 1 / 255 / ts.PIXEL_STD[0]
    assert (pixels - expected).abs().max() <= one_level + 1e-5
    assert (pixels - expected).abs().mean() < 0.3 * one_level


@pytest.mark.parametrize("renderer", ["torch", "numpy"])
def test_batch_source_gives_captions_negatives_and_every_prompt(renderer):
    config = ts.TrainConfig(**{**TINY, "batch_size": 6}, renderer=renderer)
    processor = ts.build_processor(config.image_size)
    tokenizer = processor.tokenizer
    next_batch = ts.batch_source(config, processor)
    pixels, texts, targets = next_batch()
    prompts = shapes.all_prompts()
    assert pixels.shape == (6, 3, config.image_size, config.image_size)
    assert texts["input_ids"].shape[0] == 2 * 6 + len(prompts) and targets.shape == (6, len(prompts))
    decoded = tokenizer.batch_decode(texts["input_ids"], skip_special_tokens=True)
    assert [" ".join(d.split()) for d in decoded[12:]] == prompts  # the prompt rows, in all_prompts order
    for b in range(6):
        caption = f" {' '.join(decoded[b].split())} "
        named = {i for i, prompt in enumerate(prompts) if f" {prompt[2:]} " in caption}
        assert set(targets[b].nonzero().flatten().tolist()) == named  # targets are the caption's objects
        assert decoded[6 + b] != decoded[b] and len(decoded[6 + b].split()) == len(caption.split())  # a negative
    again = ts.batch_source(config, processor)()
    assert torch.equal(again[0], pixels) and torch.equal(again[1]["input_ids"], texts["input_ids"])
    assert not torch.equal(next_batch()[0], pixels)


def test_both_renderers_train_seeded_and_learn():
    for renderer in ("torch", "numpy"):
        config = ts.TrainConfig(**TINY, steps=12, lr=3e-3, renderer=renderer)
        model_a, _, losses = ts.train(config, progress=False)
        model_b, _, _ = ts.train(config, progress=False)
        params = [dict(m.named_parameters()) for m in (model_a, model_b)]
        assert all(torch.equal(params[0][k], params[1][k]) for k in params[0]), renderer
        assert np.mean(losses[-4:]) < np.mean(losses[:4]), (renderer, losses)
    with pytest.raises(ValueError, match="`renderer` must be 'torch' or 'numpy'; got 'pil'"):
        ts.train(ts.TrainConfig(**TINY, steps=1, renderer="pil"), progress=False)


def test_main_deep_preset_builds_a_14x14_grid(tmp_path):
    out = tmp_path / "deep"
    ts.main(
        ["--out", str(out), "--backbone", "vit-deep", "--steps", "1", "--batch-size", "4", "--no-eval",
         "--set", "width=32", "--set", "heads=2", "--set", "text_layers=1"]
    )  # fmt: skip
    model = CLIPModel.from_pretrained(out, local_files_only=True)
    vision = model.config.vision_config
    assert vision.num_hidden_layers == 6 and vision.image_size // vision.patch_size == 14
    processor = CLIPProcessor.from_pretrained(out, local_files_only=True)
    assert processor(images=shapes.make_scene(0).image, return_tensors="pt")["pixel_values"].shape == (1, 3, 112, 112)
    info = json.loads((out / "training.json").read_text())
    assert info["config"]["renderer"] == "torch" and info["config"]["scene_size"] == 64
