"""The shipped ShapesCLIP: loads offline from package data, and meets its quality floors on held-out scenes."""

from __future__ import annotations

import json

import pytest
import torch

import captum_gradeclip as cg
from captum_gradeclip.zoo import shapes
from captum_gradeclip.zoo.shapes_clip import load_shapes_clip, shapes_clip_path, training_info
from tools import shapes_quality as quality


@pytest.fixture(scope="module")
def shipped():
    return load_shapes_clip()


def test_loads_offline_through_transformers_classes(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    model, processor = load_shapes_clip()
    assert type(model).__name__ == "CLIPModel" and type(processor).__name__ == "CLIPProcessor"
    assert not model.training and next(model.parameters()).device.type == "cpu"
    batch = processor(text=["a red circle"], images=shapes.make_scene(0).image, return_tensors="pt")
    assert batch["pixel_values"].shape == (1, 3, 64, 64) and batch["input_ids"].shape == (1, 5)


def test_weights_are_safetensors_of_at_most_10_mb():
    path = shapes_clip_path()
    weights = path / "model.safetensors"
    assert weights.stat().st_size <= 10 * 2**20
    assert not list(path.glob("*.bin")) and not list(path.glob("*.pt"))
    config = json.loads((path / "config.json").read_text())
    assert config["vision_config"]["patch_size"] == 8 and config["vision_config"]["image_size"] == 64


def test_unknown_backbone_is_a_clear_error():
    with pytest.raises(ValueError, match=r"`backbone` must be one of \['resnet', 'vit', 'vit-deep'\]; got 'convnext'"):
        load_shapes_clip("convnext")


def test_quality_floors_on_held_out_scenes(shipped):
    model, processor = shipped
    result = quality.evaluate(model, processor, n_single=240, n_pair=200)
    print("ShapesCLIP held-out quality:", json.dumps(result))  # the report (pytest -s shows it)
    assert result["zero_shot_top1"] >= 0.90
    assert result["pair_recall_at_5"] >= 0.80
    assert result["pair_top2_both_present"] >= 0.80
    # Grad-ECLIP's pointing game: the prompt's zero-shot probability is explained on the named object; its
    # cosine is not (docs/shapes_clip.md says why), which the report states rather than hides.
    assert result["softmax_pointing_named"] >= 0.6
    assert result["softmax_pointing_named"] > 10 * result["softmax_pointing_other"]
    assert result["softmax_pointing_named"] > result["pointing_named"]
    recorded = training_info()["quality"]
    assert abs(recorded["zero_shot_top1"] - result["zero_shot_top1"]) < 1e-6, "training.json is up to date"


def test_grad_eclip_maps_on_shapes_clip_run_in_both_modes(shipped):
    model, processor = shipped
    scene = shapes.make_scene(5, n_objects=2)
    pixels = processor(images=scene.image, return_tensors="pt")["pixel_values"]
    sim = cg.ImageTextSimilarity(model, scene.prompts, processor=processor)
    for mode in ("native", "paper"):
        maps = cg.GradECLIP(sim, mode=mode).attribute(pixels)
        assert maps.shape == (1, 2, 8, 8) and torch.isfinite(maps).all() and (maps > 0).any()


def test_setup_cfg_ships_every_file_of_the_model_as_package_data():
    import configparser
    from fnmatch import fnmatch
    from pathlib import Path

    root = Path(cg.__file__).parents[1]
    config = configparser.ConfigParser()
    config.read(root / "setup.cfg")
    patterns = [p.strip() for p in config["options.package_data"]["captum_gradeclip.zoo"].split(",")]
    zoo = shapes_clip_path().parent
    files = [f.relative_to(zoo).as_posix() for f in shapes_clip_path().iterdir()]
    assert {"config.json", "model.safetensors", "processor_config.json", "tokenizer.json"} <= {
        f.split("/")[-1] for f in files
    }
    assert all(any(fnmatch(f, p) for p in patterns) for f in files), (files, patterns)
