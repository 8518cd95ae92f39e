"""cg.load: every spec kind available offline, clear errors, and checkpoints whose weights do not match."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import captum_gradeclip as cg
from captum_gradeclip.adapters.processing import BPEProcessing, HFProcessing, LoadError
from captum_gradeclip.cli.main import main
from captum_gradeclip.zoo import shapes
from tools.train_shapes import TrainConfig, build_model, build_processor


@pytest.mark.parametrize(
    ("spec", "adapter", "grid"),
    [
        ("shapes", "HFCLIPAdapter", (8, 8)),
        ("shapes:vit", "HFCLIPAdapter", (8, 8)),
        ("shapes:deep", "HFCLIPAdapter", (14, 14)),
        ("shapes:resnet", "OpenCLIPAdapter", (4, 4)),
    ],
)
def test_shapes_specs_load_with_their_processing(spec, adapter, grid):
    if spec == "shapes:resnet" and importlib.util.find_spec("open_clip") is None:
        pytest.skip("needs the openclip extra")
    loaded = cg.load(spec)
    assert type(loaded.adapter).__name__ == adapter and not loaded.model.training
    scene = shapes.make_scene(2)
    pixels = loaded.pixels(scene.image)
    assert loaded.adapter.patch_grid(pixels) == grid
    side = pixels.shape[-1]
    resized = np.asarray(scene.image.resize((side, side), Image.BICUBIC)) / 255
    assert np.abs(loaded.seen_image(pixels) - resized).mean() < 0.02, "a square scene is seen whole"
    ids, mask = loaded.tokenize(["a red circle", "a blue square and a green cross"])
    assert [w for w, _ in loaded.processing.words(ids[0][mask[0].bool()], torch.ones(5))] == ["a", "red", "circle"]
    sim = cg.ImageTextSimilarity(loaded.model, ["a red circle"], processor=loaded.processor)
    maps = cg.GradECLIP(sim).attribute(pixels, target=0)
    heat = loaded.to_original(maps, scene.image)
    assert heat.shape == (1, 1, *scene.array.shape[:2]) and not heat.isnan().any()


@pytest.mark.parametrize("spec", ["bogus", "hf", "hf:", "open_clip:", "openai:", "clip:ViT-B/32"])
def test_unknown_specs_are_one_line_errors_that_list_the_specs(spec):
    listed = r"shapes \| shapes:resnet \| shapes:deep \| hf:NAME_OR_PATH \| open_clip"
    with pytest.raises(LoadError, match=r"^unknown model spec .*; the specs are " + listed):
        cg.load(spec)
    with pytest.raises(TypeError, match="`spec` must be a str"):
        cg.load(None)


def test_unknown_shapes_backbone_lists_the_specs_as_typed():
    with pytest.raises(LoadError, match=r"^unknown model spec 'shapes:bogus'; the specs are shapes \| shapes:resnet"):
        cg.load("shapes:bogus")
    with pytest.raises(LoadError, match=r"^unknown model spec 'shapes:deeep' \(did you mean 'shapes:deep'\?\)"):
        cg.load("shapes:deeep")


def test_unreachable_hub_is_refused_without_waiting(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(LoadError, match=r"hub is unreachable .*spec 'shapes'") as info:
        cg.load("hf:openai/clip-vit-base-patch32")
    assert "\n" not in str(info.value) and "--model" not in str(info.value), "the library quotes no CLI flag"


def tiny_clip_dir(tmp_path):
    config = TrainConfig(width=32, vision_layers=1, text_layers=1, heads=2, projection_dim=16)
    build_model(config).save_pretrained(tmp_path)
    build_processor().save_pretrained(tmp_path)
    return tmp_path


def test_hf_directory_loads_offline_with_its_processor(tmp_path):
    loaded = cg.load(f"hf:{tiny_clip_dir(tmp_path)}")
    assert type(loaded.adapter).__name__ == "HFCLIPAdapter" and isinstance(loaded.processing, HFProcessing)
    assert loaded.pixels(shapes.make_scene(0).image).shape == (1, 3, 64, 64)


def test_open_clip_architecture_without_pretrained_weights_loads():
    pytest.importorskip("open_clip")
    loaded = cg.load("openclip:ViT-S-32")
    assert type(loaded.adapter).__name__ == "OpenCLIPAdapter" and isinstance(loaded.processing, BPEProcessing)
    photo = shapes.make_scene(0).image.resize((96, 64))
    pixels = loaded.pixels(photo)
    assert pixels.shape == (1, 3, 224, 224)
    ids, mask = loaded.tokenize(["a photo of a dog"])
    assert ids.shape == (1, 77) and int(mask.sum()) == 7
    assert [w for w, _ in loaded.processing.words(ids[0], torch.ones(77))] == ["a", "photo", "of", "a", "dog"]
    geometry = loaded.geometry((64, 96))
    assert geometry.resized == (224, 336) and geometry.offset == (0, 56)


def drop_a_layer(folder) -> str:
    """Removes the last vision layer's MLP weights from ``model.safetensors``; returns one removed key."""
    path = folder / "model.safetensors"
    weights = load_file(path)
    removed = sorted(k for k in weights if "vision_model.encoder.layers.0.mlp.fc2" in k)
    assert removed
    save_file({k: v for k, v in weights.items() if k not in removed}, path, metadata={"format": "pt"})
    return removed[0]


def test_a_checkpoint_that_lacks_a_layer_is_refused_unless_accepted(tmp_path):
    folder = tiny_clip_dir(tmp_path)
    key = drop_a_layer(folder)
    with pytest.raises(LoadError, match=r"the checkpoint does not match the model: weights 2 missing \(") as info:
        cg.load(f"hf:{folder}")
    assert key in str(info.value) and "\n" not in str(info.value) and "allow_missing_weights=True" in str(info.value)
    loaded = cg.load(f"hf:{folder}", allow_missing_weights=True)
    assert type(loaded.adapter).__name__ == "HFCLIPAdapter"


def test_a_checkpoint_with_an_unexpected_layer_is_refused(tmp_path):
    folder = tiny_clip_dir(tmp_path)
    path = folder / "model.safetensors"
    weights = load_file(path)
    weights["vision_model.encoder.layers.7.extra.weight"] = torch.zeros(2)
    save_file(weights, path, metadata={"format": "pt"})
    with pytest.raises(LoadError, match=r"1 unexpected \(vision_model.encoder.layers.7.extra.weight\)"):
        cg.load(f"hf:{folder}")


def test_cli_refuses_a_checkpoint_that_lacks_a_layer_in_one_line_and_accepts_it_with_the_flag(tmp_path, capsys):
    folder = tiny_clip_dir(tmp_path / "model")
    drop_a_layer(folder)
    image = tmp_path / "scene.png"
    shapes.make_scene(0).image.save(image)
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(["explain", str(image), "a red circle", "--model", f"hf:{folder}", "--out", str(tmp_path / "a")])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and len(err.splitlines()) == 1
    assert "weights 2 missing" in err and "--allow-missing-weights" in err and "allow_missing_weights" not in err
    out = tmp_path / "b"
    main(
        ["explain", str(image), "a red circle", "--model", f"hf:{folder}", "--allow-missing-weights", "--out", str(out)]
    )
    assert any(out.iterdir())


def test_benchmark_and_cli_use_the_librarys_loader():
    from captum_gradeclip import loading
    from captum_gradeclip.cli import models

    assert models.hf_pretrained is loading.hf_pretrained
    source = open(models.__file__, encoding="utf-8").read()
    assert "AutoModel" not in source and "open_clip.create_model_and_transforms(" not in source
    quality = open("benchmarks/quality.py", encoding="utf-8").read()
    assert "from captum_gradeclip.loading import hf_pretrained" in quality
