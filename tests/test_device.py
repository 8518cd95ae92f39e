"""Every entry point on an accelerator, without one: the meta device stands in (see tests/meta_device.py).

The model and inputs live on ``meta`` while masks, boxes, texts and targets stay where a user holds them (CPU
tensors, lists). Torch fails any op that mixes the two devices, as it does with CUDA and CPU; host reads of
the model's data are recorded. An explanation reads the device once: the checks of its inputs, collected and
read together at the end (``wrappers.deferred_checks``). The same entry points run for real, numbers
included, in tests/test_cuda.py wherever a GPU is present.
"""

from __future__ import annotations

import pytest
import torch

import captum_gradeclip as cg
from captum_gradeclip import baselines, metrics
from tests.conftest import make_clip, random_texts
from tests.meta_device import MetaDevice

# RISE and M2IB draw their masks and noise with a torch.Generator on the input's device; a meta generator
# does not exist, so they run in tests/test_cuda.py only.
IMAGE_BASELINES = ["RawAttention", "AttentionRollout", "GAME", "TokenGradCAM", "MaskCLIP", "CLIPSurgery"]
TEXT_BASELINES = ["RawAttention", "AttentionRollout", "GAME", "TokenGradCAM"]


@pytest.fixture(scope="module")
def on_meta():
    """A tiny CLIP and its wrappers on the meta device; texts and masks as a user holds them, on the CPU."""
    model = make_clip().to("meta")
    device = MetaDevice()
    with device:  # the wrappers check their reference embeddings once, here
        sim = cg.ImageTextSimilarity(model, text_embeds=torch.randn(3, 16, device="meta"))
        tsim = cg.TextImageSimilarity(model, image_embeds=torch.randn(2, 16, device="meta"))
    ids, mask = random_texts(3, 8)
    return {
        "model": model,
        "sim": sim,
        "tsim": tsim,
        "pixels": torch.randn(2, 3, 32, 32, device="meta"),
        "ids": ids.to("meta"),
        "mask": mask.to("meta"),
        "cpu_ids": ids,
        "cpu_mask": mask,
    }


def run(fn):
    """``fn()`` under the stand-in device: its result and the host reads it made."""
    device = MetaDevice()
    with device:
        out = fn()
    return out, device.reads


def assert_one_read_at_the_end(reads) -> None:
    assert len(reads) == 1, [r.where for r in reads]
    assert any("in deferred_checks" in line for line in reads[0].where), reads[0].where


def test_the_stand_in_fails_on_mixed_devices_and_records_reads():
    x = torch.ones(4, device="meta")
    device = MetaDevice()
    with device, pytest.raises(RuntimeError, match="device"):
        _ = x + torch.arange(4)  # what the pointing game did before it built its grid on the maps' device
    with device:
        assert bool(x.sum() > 0) is True
        _ = x + torch.tensor(1.0)  # a 0-d CPU tensor is allowed, as with CUDA
    assert len(device.reads) == 1 and device.reads[0].op.startswith("aten._local_scalar_dense")


@pytest.mark.parametrize("mode", ["native", "paper"])
@pytest.mark.parametrize("target", [0, None, [2, 1], (1,), [(0,), (2,)]])
def test_grad_eclip_image_reads_the_device_once(on_meta, mode, target):
    maps, reads = run(lambda: cg.GradECLIP(on_meta["sim"], mode=mode).attribute(on_meta["pixels"], target=target))
    assert maps.device.type == "meta"
    assert maps.shape == (2, 3 if target is None else 1, 4, 4)
    assert_one_read_at_the_end(reads)


@pytest.mark.parametrize("mode", ["native", "paper"])
def test_grad_eclip_text_reads_the_device_once(on_meta, mode):
    explainer = cg.GradECLIP(on_meta["tsim"], mode=mode)
    tok, reads = run(lambda: explainer.attribute(on_meta["ids"], target=1, additional_forward_args=(on_meta["mask"],)))
    assert tok.device.type == "meta" and tok.shape == (3, 8)
    assert_one_read_at_the_end(reads)


@pytest.mark.parametrize("name", IMAGE_BASELINES)
def test_image_baselines_read_the_device_once(on_meta, name):
    maps, reads = run(lambda: getattr(baselines, name)(on_meta["sim"]).attribute(on_meta["pixels"], target=0))
    assert maps.device.type == "meta" and maps.shape == (2, 1, 4, 4)
    assert_one_read_at_the_end(reads)


@pytest.mark.parametrize("name", TEXT_BASELINES)
def test_text_baselines_read_the_device_once(on_meta, name):
    explainer = getattr(baselines, name)(on_meta["tsim"])
    tok, reads = run(lambda: explainer.attribute(on_meta["ids"], target=0, additional_forward_args=(on_meta["mask"],)))
    assert tok.device.type == "meta" and tok.shape == (3, 8)
    assert_one_read_at_the_end(reads)


def test_localisation_metrics_take_masks_and_boxes_from_the_cpu(on_meta):
    maps = torch.rand(2, 1, 4, 4, device="meta")
    masks = torch.zeros(2, 32, 32, dtype=torch.bool)
    boxes = torch.tensor([[0, 0, 8, 8], [4, 4, 20, 12]])
    for result in (
        run(lambda: metrics.pointing_game(maps, masks))[0],
        run(lambda: metrics.pointing_game(maps, boxes=boxes, image_size=(32, 32), tolerance=3))[0],
        run(lambda: metrics.energy_pointing_game(maps, masks))[0],
        run(lambda: metrics.energy_pointing_game(maps, boxes=list(boxes[:, None]), image_size=(32, 32)))[0],
    ):
        assert result.device.type == "meta" and result.shape == (2,)


@pytest.mark.parametrize("name", ["image_deletion", "image_insertion"])
@pytest.mark.parametrize("baseline", ["random", "blur", "mean"])
def test_image_curves_stay_on_the_device(on_meta, name, baseline):
    maps = torch.rand(2, 1, 4, 4, device="meta")
    fn = getattr(metrics, name)
    curve, _ = run(lambda: fn(on_meta["sim"], on_meta["pixels"], maps, target=[0, 2], steps=4, baseline=baseline))
    assert curve.scores.device.type == "meta" and curve.scores.shape == (2, 5) and curve.auc.shape == (2,)


@pytest.mark.parametrize("name", ["text_deletion", "text_insertion"])
def test_text_curves_stay_on_the_device(on_meta, name):
    tok = torch.rand(3, 8, device="meta")
    fn = getattr(metrics, name)
    curve, _ = run(
        lambda: fn(on_meta["tsim"], on_meta["ids"], tok, target=0, additional_forward_args=(on_meta["mask"],), steps=4)
    )
    assert curve.scores.device.type == "meta" and curve.auc.shape == (3,)


def test_robustness_metrics_stay_on_the_device(on_meta):
    explainer = cg.GradECLIP(on_meta["sim"])
    sens, _ = run(lambda: metrics.sensitivity(explainer, on_meta["pixels"], target=0, n_perturb_samples=2))
    infid, _ = run(lambda: metrics.infidelity(explainer, on_meta["pixels"], target=0, n_perturb_samples=2))
    assert sens.device.type == infid.device.type == "meta" and sens.shape == infid.shape == (2,)


def test_wrappers_move_cpu_texts_and_images_to_the_model(on_meta):
    model = on_meta["model"]
    sim, _ = run(lambda: cg.ImageTextSimilarity(model, texts={"input_ids": on_meta["cpu_ids"]}))
    tsim, _ = run(lambda: cg.TextImageSimilarity(model, images=torch.randn(2, 3, 32, 32)))
    assert sim.reference_embeds.device.type == tsim.reference_embeds.device.type == "meta"
    scores, _ = run(lambda: tsim(on_meta["ids"], on_meta["mask"]))
    assert scores.device.type == "meta" and scores.shape == (3, 2)


def test_reference_embeddings_from_the_cpu_join_the_model(on_meta):
    sim, _ = run(lambda: cg.ImageTextSimilarity(on_meta["model"], text_embeds=torch.randn(3, 16)))
    tsim, _ = run(lambda: cg.TextImageSimilarity(on_meta["model"], image_embeds=torch.randn(2, 16)))
    assert sim.reference_embeds.device.type == tsim.reference_embeds.device.type == "meta"
    maps, _ = run(lambda: cg.GradECLIP(sim).attribute(on_meta["pixels"], target=0))
    assert maps.device.type == "meta"


def test_word_analysis_takes_cpu_images_and_texts():
    # (the fine-tuning step checks its data on the host, which the stand-in cannot answer: tests/test_cuda.py)
    from captum_gradeclip.zoo import shapes
    from tools import train_shapes as ts

    torch.manual_seed(0)
    config = ts.TrainConfig(width=32, vision_layers=2, text_layers=1, heads=2, projection_dim=16)
    model, processor = ts.build_model(config).eval().to("meta"), ts.build_processor()
    images = [s.image for s in shapes.make_scenes(range(3), n_objects=2)]
    records, _ = run(lambda: cg.analysis.word_importances(model, processor, images, ["a red circle"] * 3))
    assert len(records) == 3  # (its words are read from data the stand-in does not hold)
