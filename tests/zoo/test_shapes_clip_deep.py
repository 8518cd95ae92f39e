"""The shipped ShapesCLIP-Deep (6-layer ViT, 14x14 grid): offline loading, size, quality floors at least those of
the 2-layer ViT on held-out scenes, Grad-ECLIP's maps on its grid and over several layers."""

from __future__ import annotations

import json

import pytest
import torch

import captum_gradeclip as cg
from captum_gradeclip.zoo import MODEL_SPECS, shapes
from captum_gradeclip.zoo.shapes_clip import load_shapes_clip, shapes_clip_path, training_info
from tools import shapes_quality as quality


@pytest.fixture(scope="module")
def shipped():
    return load_shapes_clip("vit-deep")


def test_loads_offline_with_a_14x14_grid_of_6_layers(monkeypatch, shipped):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    model, processor = load_shapes_clip("vit-deep")
    assert type(model).__name__ == "CLIPModel" and type(processor).__name__ == "CLIPProcessor"
    vision = model.config.vision_config
    assert vision.num_hidden_layers >= 6 and vision.image_size // vision.patch_size == 14
    assert not model.training
    batch = processor(text=["a red circle"], images=shapes.make_scene(0).image, return_tensors="pt")
    assert batch["pixel_values"].shape == (1, 3, 112, 112)
    assert MODEL_SPECS["shapes:deep"] == "vit-deep"


def test_weights_are_safetensors_of_at_most_25_mb():
    path = shapes_clip_path("vit-deep")
    assert (path / "model.safetensors").stat().st_size <= 25 * 2**20
    assert not list(path.glob("*.bin")) and not list(path.glob("*.pt"))
    info = training_info("vit-deep")
    assert info["config"]["vision_layers"] >= 6 and info["config"]["renderer"] == "torch"


def test_quality_at_least_that_of_the_2_layer_vit(shipped):
    model, processor = shipped
    result = quality.evaluate(model, processor, n_single=240, n_pair=200)
    print("ShapesCLIP-Deep held-out quality:", json.dumps(result))
    shallow = training_info("vit")["quality"]
    for key in ("zero_shot_top1", "pair_recall_at_5", "pair_top2_both_present"):
        assert result[key] >= shallow[key], (key, result[key], shallow[key])
    assert result["softmax_pointing_named"] > 10 * result["softmax_pointing_other"]
    recorded = training_info("vit-deep")["quality"]
    assert abs(recorded["zero_shot_top1"] - result["zero_shot_top1"]) < 1e-6, "training.json is up to date"


def test_grad_eclip_maps_on_the_14x14_grid_over_one_and_all_layers(shipped):
    model, processor = shipped
    scene = shapes.make_scene(5, n_objects=2)
    pixels = processor(images=scene.image, return_tensors="pt")["pixel_values"]
    sim = cg.ImageTextSimilarity(model, shapes.all_prompts(), processor=processor, score="softmax")
    target = [shapes.all_prompts().index(p) for p in scene.prompts]
    one = cg.GradECLIP(sim).attribute(pixels.expand(2, -1, -1, -1), target=target)
    every = cg.GradECLIP(sim, layers=6).attribute(pixels.expand(2, -1, -1, -1), target=target)
    assert one.shape == every.shape == (2, 1, 14, 14)  # one target per example
    assert torch.isfinite(every).all() and not torch.allclose(one, every)
    # the sum over the last 6 blocks includes the last block's own map
    assert (every >= one - 1e-6).all()
