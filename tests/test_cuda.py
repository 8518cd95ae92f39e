"""Every public entry point on a real GPU: the same numbers as on the CPU, low precision, one host read.

Marked ``cuda``: they run wherever ``torch.cuda.is_available()`` and are skipped elsewhere (CI has no GPU;
tests/test_device.py checks devices and host reads there with a stand-in). Run them alone with
``python -m pytest -m cuda``; ``benchmarks/gpu.sh`` does so on a GPU machine. Masks, boxes, texts and
reference embeddings stay on the CPU, where a user holds them.
"""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

import captum_gradeclip as cg
from captum_gradeclip import baselines, metrics, viz
from tests.conftest import make_clip, random_texts, rel_err

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

IMAGE_METHODS = ["GradECLIP", *baselines.__all__]
TEXT_METHODS = ["GradECLIP", "RawAttention", "AttentionRollout", "GAME", "TokenGradCAM", "M2IB"]
RANDOM = {"RISE", "M2IB"}  # draw on the input's device: the CPU and the GPU draw different numbers


def method(name: str, sim):
    if name == "GradECLIP":
        return cg.GradECLIP(sim)
    if name == "RISE":
        return baselines.RISE(sim, n_masks=64)
    if name == "M2IB":
        return baselines.M2IB(sim, steps=2)
    return getattr(baselines, name)(sim)


@pytest.fixture(scope="module")
def pair():
    """The same tiny CLIP on the CPU and on the GPU, with CPU-held references."""
    cpu = make_clip()
    gpu = make_clip().cuda()
    refs, images = torch.randn(3, 16), torch.randn(2, 3, 32, 32)
    ids, mask = random_texts(3, 8)
    return {
        "cpu": (cg.ImageTextSimilarity(cpu, text_embeds=refs), cg.TextImageSimilarity(cpu, images=images)),
        "cuda": (cg.ImageTextSimilarity(gpu, text_embeds=refs), cg.TextImageSimilarity(gpu, images=images)),
        "pixels": torch.randn(2, 3, 32, 32),
        "ids": ids,
        "mask": mask,
    }


def host_syncs(fn) -> int:
    """How many synchronising CUDA calls ``fn`` makes (torch's sync debug mode, after a warm-up call)."""
    fn()
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


@pytest.mark.parametrize("name", IMAGE_METHODS)
def test_image_methods_on_the_gpu_equal_the_cpu(pair, name):
    sim_cpu, sim_gpu = pair["cpu"][0], pair["cuda"][0]
    on_cpu = method(name, sim_cpu).attribute(pair["pixels"], target=[0, 2])
    on_gpu = method(name, sim_gpu).attribute(pair["pixels"].cuda(), target=[0, 2])
    assert on_gpu.device.type == "cuda" and on_gpu.shape == on_cpu.shape
    assert torch.isfinite(on_gpu).all()
    if name not in RANDOM:
        assert rel_err(on_gpu.cpu(), on_cpu) < 1e-4


@pytest.mark.parametrize("name", TEXT_METHODS)
def test_text_methods_on_the_gpu_equal_the_cpu(pair, name):
    tsim_cpu, tsim_gpu = pair["cpu"][1], pair["cuda"][1]
    ids, mask = pair["ids"], pair["mask"]
    on_cpu = method(name, tsim_cpu).attribute(ids, target=1, additional_forward_args=(mask,))
    on_gpu = method(name, tsim_gpu).attribute(ids.cuda(), target=1, additional_forward_args=(mask.cuda(),))
    assert on_gpu.device.type == "cuda" and on_gpu.shape == on_cpu.shape
    if name not in RANDOM:
        assert rel_err(on_gpu.cpu(), on_cpu) < 1e-4


@pytest.mark.parametrize("mode", ["native", "paper"])
@pytest.mark.parametrize("target", [0, None])
def test_an_image_explanation_synchronises_once(pair, mode, target):
    explainer = cg.GradECLIP(pair["cuda"][0], mode=mode)
    pixels = pair["pixels"].cuda()
    assert host_syncs(lambda: explainer.attribute(pixels, target=target)) <= 1  # the deferred input checks


def test_a_text_explanation_synchronises_once(pair):
    explainer = cg.GradECLIP(pair["cuda"][1])
    ids, mask = pair["ids"].cuda(), pair["mask"].cuda()
    assert host_syncs(lambda: explainer.attribute(ids, target=0, additional_forward_args=(mask,))) <= 1


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("mode", ["native", "paper"])
def test_low_precision_maps_match_float32(dtype, mode):
    model = make_clip().cuda()
    pixels = torch.randn(4, 3, 32, 32, device="cuda")
    refs = torch.randn(3, 16)
    full = cg.GradECLIP(cg.ImageTextSimilarity(model, text_embeds=refs), mode=mode).attribute(pixels)
    low_sim = cg.ImageTextSimilarity(model.to(dtype), text_embeds=refs.to(dtype))
    low = cg.GradECLIP(low_sim, mode=mode).attribute(pixels.to(dtype))
    assert low.dtype == dtype and low.device.type == "cuda"
    cosine = torch.nn.functional.cosine_similarity(low.float().flatten(1), full.flatten(1), dim=1)
    assert cosine.min() > 0.99, cosine  # measured on the CPU in tests/test_low_precision.py: above 0.999


def test_metrics_take_cpu_masks_boxes_and_give_the_cpu_numbers(pair):
    sim_cpu, sim_gpu = pair["cpu"][0], pair["cuda"][0]
    pixels = pair["pixels"]
    maps = cg.GradECLIP(sim_cpu).attribute(pixels, target=0)
    masks = torch.zeros(2, 32, 32, dtype=torch.bool)
    masks[0, :16, :16] = masks[1, 8:, 20:] = True
    boxes = torch.tensor([[0, 0, 16, 16], [20, 8, 32, 32]])
    for fn, kwargs in [
        (metrics.pointing_game, {"masks": masks}),
        (metrics.pointing_game, {"boxes": boxes, "image_size": (32, 32), "tolerance": 4}),
        (metrics.energy_pointing_game, {"masks": masks}),
        (metrics.energy_pointing_game, {"boxes": list(boxes[:, None]), "image_size": (32, 32)}),
    ]:
        on_gpu = fn(maps.cuda(), **kwargs)
        assert on_gpu.device.type == "cuda"
        assert torch.allclose(on_gpu.cpu(), fn(maps, **kwargs), atol=1e-5)
    for fn in (metrics.image_deletion, metrics.image_insertion):
        on_cpu = fn(sim_cpu, pixels, maps, target=0, steps=4, baseline="mean")
        on_gpu = fn(sim_gpu, pixels.cuda(), maps.cuda(), target=0, steps=4, baseline="mean")
        assert on_gpu.auc.device.type == "cuda"
        assert torch.allclose(on_gpu.auc.cpu(), on_cpu.auc, atol=1e-4)


def test_text_and_robustness_metrics_on_the_gpu(pair):
    tsim_cpu, tsim_gpu = pair["cpu"][1], pair["cuda"][1]
    ids, mask = pair["ids"], pair["mask"]
    tok = cg.GradECLIP(tsim_cpu).attribute(ids, target=0, additional_forward_args=(mask,))
    for fn in (metrics.text_deletion, metrics.text_insertion):
        on_cpu = fn(tsim_cpu, ids, tok, target=0, additional_forward_args=(mask,), steps=4)
        on_gpu = fn(tsim_gpu, ids.cuda(), tok.cuda(), target=0, additional_forward_args=(mask.cuda(),), steps=4)
        assert torch.allclose(on_gpu.auc.cpu(), on_cpu.auc, atol=1e-4)
    explainer = cg.GradECLIP(pair["cuda"][0])
    pixels = pair["pixels"].cuda()
    assert metrics.sensitivity(explainer, pixels, target=0, n_perturb_samples=2).device.type == "cuda"
    assert metrics.infidelity(explainer, pixels, target=0, n_perturb_samples=2).device.type == "cuda"


@pytest.fixture(scope="module")
def shapes_on_gpu():
    model, processor = cg.zoo.load_shapes_clip(device="cuda")
    scenes = cg.zoo.shapes.make_scenes(range(4), n_objects=2)
    return model, processor, scenes


def test_shapes_clip_wrappers_figures_and_word_analysis_on_the_gpu(shapes_on_gpu):
    model, processor, scenes = shapes_on_gpu
    scene = scenes[0]
    pixels = processor(images=scene.image, return_tensors="pt")["pixel_values"].cuda()
    sim = cg.ImageTextSimilarity(model, scene.prompts, processor=processor)  # texts tokenized on the CPU
    maps = cg.GradECLIP(sim).attribute(pixels)
    assert maps.device.type == "cuda" and maps.shape[:2] == (1, 2)
    hwc = cg.to_hwc(maps[0, :1], size=(64, 64))
    assert hwc.shape == (64, 64, 1)
    figure = viz.explanation_figure(scene.image, scene.prompts, maps[0])
    assert len(figure.axes) >= 3
    table = cg.analysis.analyze_words(model, processor, [s.image for s in scenes], [s.caption for s in scenes])
    assert {"colour", "shape"} <= set(table.by_tag)


def test_fine_tuning_steps_on_the_gpu(shapes_on_gpu):
    model, processor, scenes = shapes_on_gpu
    pixels = processor(images=[s.image for s in scenes], return_tensors="pt")["pixel_values"].cuda()
    tuner = cg.finetune.RegionPhraseFinetuner(model, processor, lr=1e-5)
    result = tuner.step(pixels, [s.caption for s in scenes])
    assert np.isfinite(result.loss) and result.phrases == 8
    assert next(tuner.model.parameters()).device.type == "cuda"


@pytest.mark.parametrize("command", ["demo", "explain", "explain-dataset"])
def test_the_command_line_runs_on_the_gpu(tmp_path, command):
    scene = cg.zoo.shapes.make_scene(0, n_objects=1)
    image = tmp_path / "scene.png"
    scene.image.save(image)
    args = {
        "demo": ["demo", "--out", str(tmp_path / "demo")],
        "explain": ["explain", str(image), *scene.prompts, "--out", str(tmp_path / "explain")],
        "explain-dataset": [
            "explain-dataset",
            "--images",
            str(tmp_path),
            "--pairs",
            str(_pairs(tmp_path, scene.prompts[0])),
            "--out",
            str(tmp_path / "store"),
        ],
    }[command]
    done = subprocess.run(
        [sys.executable, "-m", "captum_gradeclip", *args, "--device", "cuda"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def _pairs(folder, text: str):
    path = folder / "pairs.csv"
    path.write_text(f"image,text\nscene.png,{text}\n")
    return path


def test_the_batch_renderer_and_the_trainer_run_on_the_gpu():
    from captum_gradeclip.zoo import shapes_batch
    from tools import train_shapes as ts

    pairs = shapes_batch.sample_pairs(np.array([1, 2, 3] * 20), np.random.default_rng(0))
    batch = shapes_batch.render_batch(pairs, torch.Generator("cuda").manual_seed(0))
    assert batch.images.device.type == "cuda" and batch.images.shape == (60, 3, 64, 64)
    on_cpu = shapes_batch.shape_masks(batch.pairs.cpu() % 4, batch.boxes.cpu(), 64)
    assert torch.equal(batch.masks().cpu(), on_cpu & (batch.pairs.cpu() >= 0)[..., None, None])
    assert int(batch.masks().sum(1).max()) == 1
    config = ts.TrainConfig(width=32, vision_layers=1, text_layers=1, heads=2, projection_dim=16, batch_size=8, steps=3)
    model, _, losses = ts.train(config, progress=False, device="cuda")
    assert next(model.parameters()).device.type == "cuda" and len(losses) == 3 and all(np.isfinite(losses))
