"""Captum's metrics, visualizers and other methods run unchanged on our wrappers and outputs."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import torch
from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, Occlusion
from captum.attr import visualization as viz
from captum.metrics import infidelity, sensitivity_max

import captum_gradeclip as cg
from tests.conftest import make_clip, random_texts


def _setup():
    model = make_clip(0)
    sim = cg.ImageTextSimilarity(model, text_embeds=torch.randn(3, 16, generator=torch.Generator().manual_seed(1)))
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    return model, sim, x


def test_sensitivity_max_runs_on_attribute():
    _, sim, x = _setup()
    explainer = cg.GradECLIP(sim)
    sens = sensitivity_max(explainer.attribute, x, target=1, n_perturb_samples=3)
    assert sens.shape == (2,)
    assert torch.isfinite(sens).all() and (sens >= 0).all()
    sens_tuple = sensitivity_max(explainer.attribute, (x,), target=1, n_perturb_samples=3)
    assert sens_tuple.shape == (2,) and torch.isfinite(sens_tuple).all()


def test_infidelity_with_upsampled_map():
    _, sim, x = _setup()
    maps = cg.GradECLIP(sim).attribute(x, target=2)
    upsampled = LayerAttribution.interpolate(maps, x.shape[-2:], "bilinear").expand_as(x)

    def perturb(inputs):
        noise = torch.randn_like(inputs) * 0.05
        return noise, inputs - noise

    value = infidelity(sim, perturb, x, upsampled, target=2, n_perturb_samples=4)
    assert value.shape == (2,) and torch.isfinite(value).all()


def test_visualize_image_attr_blended_heat_map():
    _, sim, x = _setup()
    maps = cg.GradECLIP(sim).attribute(x, target=0)
    image = np.random.default_rng(0).random((32, 32, 3))
    hwc = cg.to_hwc(maps[0], size=image.shape[:2])
    assert hwc.shape == (32, 32, 1)
    fig, _ = viz.visualize_image_attr(hwc, image, "blended_heat_map", sign="positive", use_pyplot=False)
    assert fig is not None


def test_token_scores_format_for_visualize_text():
    model = make_clip(1)
    ids, mask = random_texts(1, 6, seed=3)
    tsim = cg.TextImageSimilarity(model, image_embeds=torch.randn(1, 16))
    scores = cg.GradECLIP(tsim).attribute(ids, target=0, additional_forward_args=(mask,))[0]
    tokens = [f"w{int(i)}" for i in ids[0]]
    html = viz.format_word_importances(tokens, scores.tolist())
    assert all(t in html for t in tokens)
    assert scores.max() > 0
    strongest = tokens[int(scores.argmax())]
    pairs = cg.words(tokens, scores)
    merged = viz.format_word_importances([w for w, _ in pairs], [s for _, s in pairs])
    assert strongest in merged


def test_other_captum_methods_run_on_the_wrapper(clip):
    sim = cg.ImageTextSimilarity(clip, text_embeds=torch.randn(3, 16))
    x = torch.randn(2, 3, 32, 32)
    ig = IntegratedGradients(sim).attribute(x, target=1, n_steps=4)
    assert ig.shape == x.shape and torch.isfinite(ig).all() and ig.abs().sum() > 0
    gradcam = LayerGradCam(sim, clip.vision_model.encoder.layers[-1]).attribute(x, target=1)
    assert gradcam.shape[0] == 2 and torch.isfinite(gradcam).all()
    occ = Occlusion(sim).attribute(x, target=0, sliding_window_shapes=(3, 8, 8), strides=8)
    assert occ.shape == x.shape and torch.isfinite(occ).all()


def test_integrated_gradients_on_text_embeddings(clip):
    from captum.attr import LayerIntegratedGradients

    ids, mask = random_texts(2, 7, seed=1)
    tsim = cg.TextImageSimilarity(clip, image_embeds=torch.randn(2, 16))
    lig = LayerIntegratedGradients(tsim, clip.text_model.embeddings.token_embedding)
    attr = lig.attribute(ids, baselines=torch.zeros_like(ids), target=0, additional_forward_args=(mask,), n_steps=4)
    assert attr.shape == (*ids.shape, 32) and torch.isfinite(attr).all()
