"""The shipped ResNet ShapesCLIP (open_clip ModifiedResNet): offline loading, its processor, quality floors on
held-out scenes, Grad-ECLIP on its attention pool, and the training script's ``--backbone resnet``."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("open_clip", reason="needs the openclip extra: pip install -e '.[openclip]'")

import captum_gradeclip as cg
from captum_gradeclip.zoo import shapes
from captum_gradeclip.zoo.shapes_clip import (
    ShapesProcessor,
    load_open_clip_model,
    load_shapes_clip,
    shapes_clip_path,
    training_info,
)
from tools import shapes_quality as quality
from tools import train_shapes as ts


@pytest.fixture(scope="module")
def shipped():
    return load_shapes_clip("resnet")


def test_loads_offline_as_an_open_clip_resnet(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    model, processor = load_shapes_clip("resnet")
    assert type(model).__module__.startswith("open_clip.") and type(model).__name__ == "CLIP"
    assert type(model.visual).__name__ == "ModifiedResNet" and model.visual.attnpool is not None
    assert isinstance(processor, ShapesProcessor) and not model.training
    assert next(model.parameters()).dtype == torch.float32
    batch = processor(text=["a red circle"], images=shapes.make_scene(0).image, return_tensors="pt")
    assert batch["pixel_values"].shape == (1, 3, 128, 128)
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (1, 16)
    assert type(cg.get_adapter(model)).__name__ == "OpenCLIPAdapter"


def test_weights_are_small_float16_safetensors_and_json_only():
    path = shapes_clip_path("resnet")
    assert (path / "model.safetensors").stat().st_size <= 5 * 2**20  # the issue allows 10 MB
    assert {f.suffix for f in path.iterdir()} == {".json", ".safetensors"}, "no pickles"
    from safetensors import safe_open

    with safe_open(str(path / "model.safetensors"), "pt") as f:
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}
    assert dtypes <= {"F16", "I64"}
    config = json.loads((path / "open_clip_config.json").read_text())
    assert config["vision_cfg"]["image_size"] == 128 and len(config["vision_cfg"]["layers"]) == 4
    info = training_info("resnet")
    assert info["config"]["backbone"] == "resnet" and info["storage_dtype"] == "float16"
    assert info["train_minutes"] <= 20


def test_missing_open_clip_is_an_import_error_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "open_clip", None)  # makes `import open_clip` fail
    with pytest.raises(ImportError, match=r"openclip` extra .*captum-gradeclip\[openclip\]"):
        load_shapes_clip("resnet")


def test_processor_round_trip_and_the_end_of_text_has_the_highest_id(tmp_path, shipped):
    _, processor = shipped
    texts = ["a Red circle , a blue square and a green cross", "a pink circle"]
    batch = processor(text=texts, padding=True, return_tensors="pt")
    tokens = [processor.tokenizer.convert_ids_to_tokens(row) for row in batch["input_ids"].tolist()]
    assert tokens[0][:12] == ["<s>", "a", "red", "circle", ",", "a", "blue", "square", "and", "a", "green", "cross"]
    assert tokens[0][12:] == ["</s>", "<pad>", "<pad>", "<pad>"]
    assert tokens[1][:5] == ["<s>", "a", "<unk>", "circle", "</s>"]
    eos = processor.tokenizer.eos_token_id
    assert eos == len(processor.tokenizer) - 1 and processor.tokenizer.pad_token_id == 0
    assert batch["input_ids"].argmax(-1).tolist() == [12, 4], "open_clip pools at the argmax id: the </s>"
    assert batch["attention_mask"].sum(-1).tolist() == [13, 5]
    long = processor(text=["a " * 40])["input_ids"][0]
    assert len(long) == 16 and long[-1] == eos, "truncated, keeping the end-of-text token"

    processor.save_pretrained(tmp_path)
    again = ShapesProcessor.from_pretrained(tmp_path)
    assert repr(again) == repr(processor)
    scenes = shapes.make_scenes(range(3))
    a = again(text=texts, images=[s.image for s in scenes])
    b = processor(text=texts, images=[s.image for s in scenes])
    assert all(torch.equal(a[k], b[k]) for k in ("input_ids", "attention_mask", "pixel_values"))
    # the pixels the model was trained on (train_shapes) are the processor's
    expected = processor.pixels(np.stack([s.array for s in scenes]))
    assert torch.allclose(b["pixel_values"], expected, atol=1e-6)
    assert torch.allclose(processor(images=scenes[0].array)["pixel_values"], expected[:1], atol=1e-6)
    with pytest.raises(ValueError, match="give `text`, `images` or both"):
        processor()


def test_quality_floors_on_held_out_scenes(shipped):
    model, processor = shipped
    result = quality.evaluate(model, processor, n_single=240, n_pair=200)
    print("ResNet ShapesCLIP held-out quality:", json.dumps(result))
    assert result["zero_shot_top1"] >= 0.90
    assert result["pair_recall_at_5"] >= 0.80
    assert result["pair_top2_both_present"] >= 0.80
    assert result["softmax_pointing_named"] >= POINTING_FLOOR
    assert result["softmax_pointing_named"] > 10 * result["softmax_pointing_other"]
    assert result["softmax_pointing_named_cell"] >= 0.9, "the argmax cell overlaps the named object"
    recorded = training_info("resnet")["quality"]
    for key, value in result.items():
        # a pointing game takes the argmax of a 4x4 map, where near-ties flip with the rounding of the CPU kernels,
        # which varies with the load and the library versions (0.4725 recorded; 0.4775 and 0.48 measured on one
        # machine in one hour: 2 and 3 of the 400 objects)
        tolerance = POINTING_FLIPS / 400 if "pointing" in key else 1e-6
        assert abs(recorded[key] - value) <= tolerance, f"training.json is up to date ({key})"


#: The softmax pointing game's floor on the named object (measured 0.47: training.json). The 4x4 grid is coarse: an
#: argmax at the centre of a 16x16-pixel cell often misses an object of 16 to 26 pixels that the cell overlaps.
POINTING_FLOOR = 0.4
#: How many of the pointing game's 400 argmaxes (200 two-object scenes) may differ from training.json's record.
POINTING_FLIPS = 6


def test_grad_eclip_maps_on_the_attention_pool_have_the_4x4_grid(shipped):
    model, processor = shipped
    scene = shapes.make_scene(5, n_objects=2)
    pixels = processor(images=scene.image, return_tensors="pt")["pixel_values"]
    sim = cg.ImageTextSimilarity(model, scene.prompts, processor=processor, score="softmax")
    for mode in ("native", "paper"):
        maps = cg.GradECLIP(sim, mode=mode).attribute(pixels)
        assert maps.shape == (1, 2, 4, 4) and torch.isfinite(maps).all() and (maps > 0).any()
    tsim = cg.TextImageSimilarity(model, images=pixels)
    batch = processor(text=[scene.caption], padding=True, return_tensors="pt")
    words = cg.GradECLIP(tsim).attribute(
        batch["input_ids"], target=0, additional_forward_args=(batch["attention_mask"],)
    )
    assert words.shape == (1, 16) and (words[0, 1:9] > 0).any() and (words[0, 9:] == 0).all(), "padding gets 0"


def test_setup_cfg_ships_every_file_of_the_resnet_model():
    import configparser
    from fnmatch import fnmatch
    from pathlib import Path

    root = Path(cg.__file__).parents[1]
    config = configparser.ConfigParser()
    config.read(root / "setup.cfg")
    patterns = [p.strip() for p in config["options.package_data"]["captum_gradeclip.zoo"].split(",")]
    zoo = shapes_clip_path("resnet").parent
    files = [f.relative_to(zoo).as_posix() for f in shapes_clip_path("resnet").iterdir()]
    assert {"open_clip_config.json", "model.safetensors", "processor_config.json", "tokenizer.json"} <= {
        f.split("/")[-1] for f in files
    }
    assert all(any(fnmatch(f, p) for p in patterns) for f in files), (files, patterns)


TINY = ["--set", "resnet_width=8", "--set", "resnet_image_size=64", "--set", "width=32", "--set", "text_layers=1",
        "--set", "heads=2", "--set", "projection_dim=16"]  # fmt: skip


def test_train_shapes_backbone_resnet_runs_seeded_and_writes_a_loadable_directory(tmp_path, capsys):
    out = tmp_path / "resnet"
    ts.main(["--out", str(out), "--backbone", "resnet", "--steps", "3", "--batch-size", "6", "--no-eval", *TINY])
    info = json.loads((out / "training.json").read_text())
    assert info["config"]["backbone"] == "resnet" and info["config"]["steps"] == 3 and "open_clip" in info
    model, processor = load_open_clip_model(out), ShapesProcessor.from_pretrained(out)
    assert type(model.visual).__name__ == "ModifiedResNet" and model.visual.attnpool.positional_embedding.shape[0] == 5
    pixels = processor(images=shapes.make_scene(1).image)["pixel_values"]
    assert pixels.shape == (1, 3, 64, 64)
    maps = cg.GradECLIP(cg.ImageTextSimilarity(model, ["a red circle"], processor=processor)).attribute(pixels)
    assert maps.shape == (1, 1, 2, 2)
    assert "wrote" in capsys.readouterr().out

    config = ts.TrainConfig(backbone="resnet", resnet_width=8, resnet_image_size=64, width=32, text_layers=1,
                            heads=2, projection_dim=16, batch_size=8, warmup=2, steps=6, lr=3e-3)  # fmt: skip
    model_a, _, losses = ts.train(config, progress=False)
    model_b, _, _ = ts.train(config, progress=False)
    a, b = model_a.state_dict(), model_b.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), "seeded"
    assert not model_a.training and np.mean(losses[-2:]) < np.mean(losses[:2]), losses


def test_cli_loads_it_as_shapes_resnet():
    from captum_gradeclip.cli import load_model

    loaded = load_model("shapes:resnet")
    assert type(loaded.model.visual).__name__ == "ModifiedResNet" and loaded.max_tokens == 16
    assert loaded.pixels(shapes.make_scene(1).image).shape == (1, 3, 128, 128)
    ids, mask = loaded.tokenize(["a red circle", "a blue square and a red cross"])
    assert ids.shape == mask.shape == (2, 16) and loaded.count_tokens("a red circle") == 5
    assert loaded.tokens(ids[0])[:5] == ["<s>", "a", "red", "circle", "</s>"]


def test_explain_and_demo_take_model_shapes_resnet(tmp_path, capsys):
    from captum_gradeclip.cli import demo, explain

    image = tmp_path / "scene.png"
    shapes.make_scene(5, n_objects=2).image.save(image)
    explain.main(
        [str(image), "a red circle", "a blue square", "--model", "shapes:resnet", "--out", str(tmp_path / "x")]
    )
    assert (tmp_path / "x" / "index.html").is_file() and (tmp_path / "x" / "explanation.png").is_file()
    results = demo.run(tmp_path / "demo", scenes=((5, 2),), model="shapes:resnet")
    assert len(results) == 1 and len(results[0]["hits"]) == 2 and (tmp_path / "demo" / "scene_0.png").is_file()
    from captum_gradeclip.cli import CLIError

    with pytest.raises(CLIError, match="the demo runs on ShapesCLIP"):
        demo.run(tmp_path / "demo", model="hf:x")
