"""`captum-gradeclip explain --method captum:NAME`: Captum's own classes through the command line.

Each named Captum method, run by the CLI's code on ShapesCLIP, gives the maps of Captum's class called directly
on the same wrapper and pooled by hand (the sum of absolute values per 8x8 patch); captum:IntegratedGradients'
word importances are Captum's LayerIntegratedGradients over the token embeddings, summed over the embedding.
"""

from __future__ import annotations

import pytest
import torch
from captum.attr import (
    FeatureAblation,
    InputXGradient,
    IntegratedGradients,
    LayerGradCam,
    LayerIntegratedGradients,
    Occlusion,
    Saliency,
)
from PIL import Image

import captum_gradeclip as cg
from captum_gradeclip.cli import load_model
from captum_gradeclip.cli.explain import explain, pick_method
from captum_gradeclip.zoo import shapes
from tests.test_explain_methods import _run

NAMES = [
    "captum:IntegratedGradients",
    "captum:Occlusion",
    "captum:FeatureAblation",
    "captum:Saliency",
    "captum:InputXGradient",
    "captum:LayerGradCam",
]


def _pooled(a: torch.Tensor) -> torch.Tensor:
    n, c, h, w = a.shape
    return a.detach().abs().reshape(n, c, h // 8, 8, w // 8, 8).sum((1, 3, 5))


def _direct(name: str, sim: cg.ImageTextSimilarity, x: torch.Tensor, column: int) -> torch.Tensor:
    """Captum's class called directly on the wrapper for one text, as a ``(1, 8, 8)`` map."""
    if name == "captum:IntegratedGradients":
        return _pooled(IntegratedGradients(sim).attribute(x, target=column, n_steps=32))
    if name == "captum:Occlusion":
        return _pooled(Occlusion(sim).attribute(x, target=column, sliding_window_shapes=(3, 8, 8), strides=(3, 8, 8)))
    if name == "captum:FeatureAblation":
        patches = torch.arange(64).reshape(8, 8).repeat_interleave(8, 0).repeat_interleave(8, 1)
        return _pooled(FeatureAblation(sim).attribute(x, target=column, feature_mask=patches))
    if name == "captum:Saliency":
        return _pooled(Saliency(sim).attribute(x.clone().requires_grad_(), target=column))
    if name == "captum:InputXGradient":
        return _pooled(InputXGradient(sim).attribute(x.clone().requires_grad_(), target=column))
    layer = sim.model.vision_model.embeddings.patch_embedding
    return LayerGradCam(sim, layer).attribute(x, target=column).detach()[:, 0]


@pytest.fixture(scope="module")
def scene_file(tmp_path_factory):
    root = tmp_path_factory.mktemp("captum")
    scene = shapes.make_scene(4_100_001, n_objects=2)
    scene.image.save(root / "scene.png")
    return root / "scene.png", scene


@pytest.fixture(scope="module")
def loaded():
    return load_model("shapes")


@pytest.mark.parametrize("name", NAMES)
def test_the_cli_s_maps_are_captum_s_called_directly_and_pooled(scene_file, loaded, name):
    path, scene = scene_file
    texts = [*scene.prompts, scene.absent_prompts[0]]
    with Image.open(path) as image:
        _, _, maps, words = explain(loaded, image.convert("RGB"), texts, method=pick_method(name))
        pixels = loaded.pixels(image.convert("RGB"))
    ids, mask = loaded.tokenize(texts)
    sim = cg.ImageTextSimilarity(loaded.model, {"input_ids": ids, "attention_mask": mask})
    expected = torch.cat([_direct(name, sim, pixels, j) for j in range(len(texts))])
    assert maps.shape == expected.shape == (len(texts), 8, 8)
    torch.testing.assert_close(maps, expected.float(), rtol=1e-4, atol=1e-6)
    assert (words is None) == (name != "captum:IntegratedGradients")


def test_integrated_gradients_word_scores_are_layer_integrated_gradients(scene_file, loaded):
    path, scene = scene_file
    texts = [scene.caption, scene.prompts[0]]
    with Image.open(path) as image:
        _, _, _, words = explain(loaded, image.convert("RGB"), texts, method=pick_method("integratedgradients"))
        pixels = loaded.pixels(image.convert("RGB"))
    ids, mask = loaded.tokenize(texts)
    tsim = cg.TextImageSimilarity(loaded.model, images=pixels)
    pad = loaded.model.config.text_config.pad_token_id
    inner = torch.zeros_like(mask, dtype=torch.bool)  # the words: after the start token, before the end token
    for i, n in enumerate(mask.sum(1).tolist()):
        inner[i, 1 : n - 1] = True
    baseline = torch.where(inner, torch.full_like(ids, pad), ids)
    lig = LayerIntegratedGradients(tsim, loaded.model.text_model.embeddings.token_embedding)
    rows = lig.attribute(ids, baselines=baseline, target=[0, 0], additional_forward_args=(mask,), n_steps=32)
    rows = rows.detach().sum(-1) * inner
    for j, text in enumerate(texts):
        keep = mask[j].bool()
        expected = cg.words(loaded.tokens(ids[j][keep]), rows[j][keep], text=text)
        assert [w for w, _ in words[j]] == [w for w, _ in expected] == text.split()
        torch.testing.assert_close(torch.tensor([s for _, s in words[j]]), torch.tensor([s for _, s in expected]))


@pytest.mark.parametrize("given", [*NAMES, "occlusion", "Saliency"])
def test_every_captum_name_runs_from_the_command_line(capsys, scene_file, tmp_path, given):
    path, scene = scene_file
    texts = [scene.prompts[0], scene.absent_prompts[0]]
    code, out, err = _run(capsys, str(path), *texts, "--method", given, "--out", str(tmp_path / "out"))
    assert code == 0, err
    name = pick_method(given).name
    assert name.startswith("captum:")
    lines = [line for line in out.splitlines() if line[:1] in "* "]
    assert len(lines) == 2
    assert ("(not explained)" in lines[0]) == (name != "captum:IntegratedGradients")
    if name != "captum:IntegratedGradients":
        assert err.strip() == f"captum-gradeclip: warning: no word importances: {name} explains image only"
    assert f"explained by {name} on shapes</title>" in (tmp_path / "out" / "index.html").read_text()


def test_layer_grad_cam_on_the_resnet_is_a_one_line_error_saying_why(capsys, scene_file):
    pytest.importorskip("open_clip")
    path, _ = scene_file
    code, out, err = _run(capsys, str(path), "a red circle", "--model", "shapes:resnet", "--method", "layergradcam")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith(
        "captum-gradeclip: error: cannot explain with shapes:resnet: captum:LayerGradCam explains the patch embedding"
    )
