"""Shared CLI pieces: one-line errors, model specs, image reading (in-process; the commands run as subprocesses
in test_explain.py and test_demo.py)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from PIL import Image

from captum_gradeclip.cli import (
    ArgumentParser,
    CLIError,
    LoadedModel,
    hub_reachable,
    load_model,
    read_image,
    with_dtype,
)
from captum_gradeclip.zoo import shapes
from tools.train_shapes import TrainConfig, build_model, build_processor


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_parser_errors_are_one_line_cli_errors():
    parser = ArgumentParser(prog="captum-gradeclip explain")
    parser.add_argument("image")
    with pytest.raises(CLIError, match=r"^captum-gradeclip explain: the following arguments are required: image"):
        parser.parse_args([])


@pytest.mark.parametrize("spec", ["bogus", "hf", "hf:", "open_clip:", "openai:", "clip:ViT-B/32"])
def test_unknown_model_spec(spec):
    listed = r"shapes \| shapes:resnet \| shapes:deep \| hf:NAME_OR_PATH"
    with pytest.raises(CLIError, match=r"unknown model spec .*; the specs are " + listed):
        load_model(spec)


def test_unknown_shapes_backbone():
    with pytest.raises(CLIError, match=r"^unknown model spec 'shapes:bogus'; the specs are shapes \| shapes:resnet"):
        load_model("shapes:bogus")


@pytest.mark.parametrize(
    ("typed", "meant"),
    [("shapes:deeep", "shapes:deep"), ("shape:deep", "shapes:deep"), ("shapes:resnt", "shapes:resnet"),
     ("opnai:ViT-B/32", "openai:ViT-B/32"), ("hf_:openai/clip", "hf:openai/clip")],
)  # fmt: skip
def test_a_near_miss_spec_is_refused_with_a_did_you_mean(typed, meant):
    with pytest.raises(CLIError, match=rf"^unknown model spec '{typed}' \(did you mean '{meant}'\?\); the specs are"):
        load_model(typed)


def test_hf_missing_directory(tmp_path):
    with pytest.raises(CLIError, match="no such directory"):
        load_model(f"hf:{tmp_path / 'nope'}")


def test_hf_unreachable_hub_suggests_shapes_or_a_local_path(offline):
    assert not hub_reachable()
    with pytest.raises(CLIError, match=r"hub is unreachable .*--model shapes .*or a local path") as info:
        load_model("hf:openai/clip-vit-base-patch32")
    assert "\n" not in str(info.value)


def test_hf_local_directory_loads_with_the_loaders_own_processor(tmp_path):
    config = TrainConfig(width=32, vision_layers=1, text_layers=1, heads=2, projection_dim=16)
    build_model(config).save_pretrained(tmp_path)
    build_processor().save_pretrained(tmp_path)
    loaded = load_model(f"hf:{tmp_path}")
    scene = shapes.make_scene(0)
    pixels = loaded.pixels(scene.image)
    assert pixels.shape == (1, 3, 64, 64)
    assert np.abs(loaded.display_image(pixels) - scene.array / 255).max() < 1e-5, "what the model saw"
    ids, mask = loaded.tokenize(["a red circle", "a blue square and a green cross"])
    assert ids.shape == mask.shape and mask[0].sum() == 5 and mask[1].sum() == 9
    assert loaded.tokens(ids[0][mask[0].bool()]) == ["<s>", "a", "red", "circle", "</s>"]


def test_open_clip_spec_uses_open_clip_or_says_how_to_install_it(offline):
    installed = importlib.util.find_spec("open_clip") is not None
    with pytest.raises(CLIError) as info:
        load_model("open_clip:ViT-B-32:openai")
    if installed:
        assert "unreachable" in str(info.value) and "--model shapes" in str(info.value)
        with pytest.raises(CLIError, match="unknown open_clip architecture 'NoSuchNet'"):
            load_model("open_clip:NoSuchNet")
    else:
        assert "pip install 'captum-gradeclip[openclip]'" in str(info.value)


def test_openai_spec_uses_clip_or_says_how_to_install_it():
    with pytest.raises(CLIError) as info:
        load_model("openai:NoSuchModel")
    message = str(info.value)
    assert "unknown OpenAI CLIP model 'NoSuchModel'" in message or "pip install 'captum-gradeclip[openai]'" in message


def test_read_image(tmp_path):
    with pytest.raises(CLIError, match=r"missing image: .*missing\.png"):
        read_image(tmp_path / "missing.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(CLIError, match=r"corrupt image: .*bad\.png"):
        read_image(bad)
    good = tmp_path / "good.png"
    Image.fromarray(np.full((5, 7), 200, dtype=np.uint8)).save(good)
    image = read_image(good)
    assert image.mode == "RGB" and image.size == (7, 5)


def test_shapes_spec_loads_the_embedded_model():
    loaded = load_model("shapes")
    assert type(loaded.model).__name__ == "CLIPModel" and not loaded.model.training
    assert loaded.pixels(shapes.make_scene(1).image).dtype == torch.float32


def test_with_dtype_casts_the_model_and_its_pixels():
    image = shapes.make_scene(3).image
    ref = load_model("shapes")
    low = load_model("shapes", "bfloat16")
    assert next(low.model.parameters()).dtype == torch.bfloat16
    pixels = low.pixels(image)
    assert pixels.dtype == torch.bfloat16
    torch.testing.assert_close(pixels.float(), ref.pixels(image), rtol=0, atol=0.02)
    assert low.display_image(pixels).dtype == np.float32
    with pytest.raises(CLIError, match="--dtype"):
        load_model("shapes", "float64")


def test_with_dtype_converts_openai_clip_its_own_way():
    pytest.importorskip("clip", reason="needs the openai extra: pip install -e '.[openai]'")
    from tests.adapters.conftest import make_openai_clip

    model = make_openai_clip(0)
    loaded = LoadedModel(model, "openai:tiny", lambda _image: torch.zeros(1, 3, 32, 32), None, None, (0.5,) * 3,
                         (0.5,) * 3, len, None)  # fmt: skip
    with pytest.raises(CLIError, match="float16 only"):
        with_dtype(loaded, "bfloat16")
    half = with_dtype(loaded, "float16")
    assert model.visual.conv1.weight.dtype == torch.float16
    assert model.visual.ln_post.weight.dtype == torch.float32  # clip.model.convert_weights keeps LayerNorms
    assert half.pixels(None).dtype == torch.float16


def test_hf_directory_with_a_truncated_or_pickled_checkpoint_is_one_line(tmp_path):
    import pickle

    from tests.conftest import make_clip

    model = make_clip(0)
    truncated, pickled = tmp_path / "truncated", tmp_path / "pickled"
    for folder in (truncated, pickled):
        model.save_pretrained(folder)
        build_processor().save_pretrained(folder)
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CLIError, match=r"cannot load \(.*\); use --model shapes") as info:
        load_model(f"hf:{truncated}")
    assert "\n" not in str(info.value)

    class Payload:
        def __reduce__(self):
            return (open, (str(tmp_path / "payload-ran"), "w"))

    (pickled / "model.safetensors").unlink()
    (pickled / "pytorch_model.bin").write_bytes(pickle.dumps({"weight": Payload()}))
    with pytest.raises(CLIError, match=r"cannot load \(.*\); use --model shapes") as info:
        load_model(f"hf:{pickled}")
    assert "\n" not in str(info.value) and not (tmp_path / "payload-ran").exists()  # refused, never run


@pytest.mark.parametrize("device", ["gpu", "cuda:x", ""])
def test_a_device_torch_does_not_know_is_one_line(device):
    with pytest.raises(CLIError, match=r"`--device` must be a torch device such as cpu, cuda or cuda:1"):
        load_model("shapes", device=device)


def test_cuda_without_a_gpu_is_one_line_before_loading(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a machine without a GPU, wherever this runs
    monkeypatch.setattr("captum_gradeclip.cli.models.load", lambda *a, **k: pytest.fail("loaded before the check"))
    with pytest.raises(CLIError, match=r"`--device cuda`: torch sees no CUDA GPU on this machine \(use --device cpu\)"):
        load_model("shapes", device="cuda")


def test_the_model_goes_to_the_device_and_the_commands_take_it():
    from captum_gradeclip.cli.commands import PARSERS

    assert next(load_model("shapes", device="cpu").model.parameters()).device.type == "cpu"
    for name, parser in PARSERS.items():
        assert "--device" in parser().format_help(), name


def test_shapes_specs_come_from_the_zoo_table(monkeypatch, tmp_path):
    from captum_gradeclip import zoo
    from captum_gradeclip.cli import demo

    monkeypatch.setitem(zoo.MODEL_SPECS, "shapes:twin", "vit")  # a new backbone's spec: one entry in the table
    loaded = load_model("shapes:twin")
    assert type(loaded.model).__name__ == "CLIPModel" and loaded.name == "shapes:twin"
    expected = r"^the demo runs on ShapesCLIP: --model shapes or shapes:resnet or shapes:deep or shapes:twin"
    with pytest.raises(CLIError, match=expected):
        demo.run(tmp_path, model="hf:x")
