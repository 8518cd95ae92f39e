"""Captum's own methods as registered methods: the same maps as Captum called directly and pooled by hand.

The oracle pools with a reshape (not the module's pooling), calls Captum's classes on the bare wrapper, and
builds the text baseline from the token ids itself.
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

import captum_gradeclip as cg
from captum_gradeclip import methods
from captum_gradeclip.baselines.captum_methods import (
    CaptumFeatureAblation,
    CaptumInputXGradient,
    CaptumIntegratedGradients,
    CaptumLayerGradCam,
    CaptumOcclusion,
    CaptumSaliency,
    patch_feature_mask,
    pool_to_patches,
)
from tests.conftest import PAD, assert_unchanged, make_clip, model_snapshot, random_texts


def _pool_by_hand(a: torch.Tensor, patch: int = 8) -> torch.Tensor:
    """``(N, C, H, W)`` -> ``(N, h, w)``: |a| summed over the channels and each patch, by reshaping."""
    n, c, height, width = a.shape
    return a.abs().reshape(n, c, height // patch, patch, width // patch, patch).sum((1, 3, 5))


@pytest.fixture(scope="module")
def clip():
    return make_clip(21)


@pytest.fixture(scope="module")
def sim(clip):
    return cg.ImageTextSimilarity(clip, text_embeds=torch.randn(3, 16, generator=torch.Generator().manual_seed(1)))


def test_pooling_is_the_sum_of_absolute_values_per_patch_by_hand():
    a = torch.zeros(1, 2, 4, 6)  # two channels, 2 x 3 patches of 2 x 2 pixels
    a[0, 0, 0, 0], a[0, 1, 1, 1] = -1.5, 2.0  # patch (0, 0): 1.5 + 2
    a[0, 0, 2:, 4:] = torch.tensor([[1.0, -1.0], [0.25, 0.0]])  # patch (1, 2): 2.25
    a[0, 1, 3, 2] = -4.0  # patch (1, 1)
    expected = torch.tensor([[[3.5, 0.0, 0.0], [0.0, 4.0, 2.25]]])
    assert torch.equal(pool_to_patches(a, (2, 3)), expected)
    # pixels past the last whole patch (a 5 x 7 input on a 2 x 3 grid of 2 x 2 patches) are not read
    wider = torch.nn.functional.pad(a, (0, 1, 0, 1), value=9.0)
    assert torch.equal(pool_to_patches(wider, (2, 3)), expected)
    with pytest.raises(ValueError, match=r"`attributions` must be \(N, C, H, W\)"):
        pool_to_patches(a[0], (2, 3))


def test_feature_mask_gives_each_patch_its_own_group():
    mask = patch_feature_mask((1, 3, 32, 32), (4, 4))
    assert mask.shape == (1, 3, 32, 32) and mask.unique().tolist() == list(range(16))
    assert (mask[0, :, 8:16, 16:24] == 6).all() and torch.equal(mask[0, 0], mask[0, 2])


def _occlusion(s, x, t):
    return Occlusion(s).attribute(x, target=t, sliding_window_shapes=(3, 8, 8), strides=(3, 8, 8))


def _feature_ablation(s, x, t):
    groups = torch.arange(16).reshape(4, 4).repeat_interleave(8, 0).repeat_interleave(8, 1)  # one id per 8x8 patch
    return FeatureAblation(s).attribute(x, target=t, feature_mask=groups)


@pytest.mark.parametrize(
    ("ours", "direct"),
    [
        (
            lambda s: CaptumIntegratedGradients(s, n_steps=8),
            lambda s, x, t: IntegratedGradients(s).attribute(x, target=t, n_steps=8),
        ),
        (CaptumOcclusion, _occlusion),
        (CaptumFeatureAblation, _feature_ablation),
        (CaptumSaliency, lambda s, x, t: Saliency(s).attribute(x.clone().requires_grad_(), target=t)),
        (CaptumInputXGradient, lambda s, x, t: InputXGradient(s).attribute(x.clone().requires_grad_(), target=t)),
    ],
    ids=["IntegratedGradients", "Occlusion", "FeatureAblation", "Saliency", "InputXGradient"],
)
def test_pixel_methods_equal_captum_called_directly_and_pooled(sim, ours, direct):
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    snapshot = model_snapshot(sim.model)
    maps = ours(sim).attribute(x, target=[2, 0])
    expected = _pool_by_hand(direct(sim, x, [2, 0]).detach())[:, None]
    assert maps.shape == (2, 1, 4, 4)
    torch.testing.assert_close(maps, expected, rtol=1e-5, atol=1e-7)
    every = ours(sim).attribute(x)  # target=None: every column, each as its own call
    assert every.shape == (2, 3, 4, 4)
    torch.testing.assert_close(every[:, 2, None][:1], maps[:1], rtol=1e-5, atol=1e-7)
    assert not x.requires_grad
    assert_unchanged(sim.model, snapshot)


def test_occlusion_and_feature_ablation_agree_with_one_patch_per_group(sim):
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(CaptumOcclusion(sim).attribute(x, 1), CaptumFeatureAblation(sim).attribute(x, 1))


def test_layer_grad_cam_is_captum_s_on_the_patch_embedding(sim, clip):
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    explainer = CaptumLayerGradCam(sim)
    assert explainer.layer is clip.vision_model.embeddings.patch_embedding
    expected = LayerGradCam(sim, clip.vision_model.embeddings.patch_embedding).attribute(x, target=1).detach()
    maps = explainer.attribute(x, target=1)
    assert expected.shape == maps.shape == (2, 1, 4, 4)
    torch.testing.assert_close(maps, expected)
    assert (maps < 0).any(), "Captum's default: no ReLU"


def test_text_is_layer_integrated_gradients_over_the_token_embeddings(clip):
    tsim = cg.TextImageSimilarity(clip, image_embeds=torch.randn(2, 16, generator=torch.Generator().manual_seed(5)))
    ids, mask = random_texts(3, 8, seed=6)
    snapshot = model_snapshot(clip)
    scores = CaptumIntegratedGradients(tsim, n_steps=8).attribute(ids, target=1, additional_forward_args=(mask,))
    # the baseline by hand: every word (after SOS, before EOS) becomes padding; SOS, EOS and padding stay
    lengths = mask.sum(1)
    words = torch.zeros_like(mask, dtype=torch.bool)
    for i, n in enumerate(lengths.tolist()):
        words[i, 1 : n - 1] = True
    baseline = torch.where(words, torch.full_like(ids, PAD), ids)
    lig = LayerIntegratedGradients(tsim, clip.text_model.embeddings.token_embedding)
    expected = lig.attribute(ids, baselines=baseline, target=1, additional_forward_args=(mask,), n_steps=8)
    expected = expected.detach().sum(-1) * words
    assert scores.shape == (3, 8)
    torch.testing.assert_close(scores, expected, rtol=1e-5, atol=1e-7)
    assert (scores[~words] == 0).all() and (scores[words] != 0).all()
    assert_unchanged(clip, snapshot)


def test_the_registry_lists_them_by_captum_s_names_and_the_cli_finds_the_bare_names():
    names = [m.name for m in methods.available() if m.name.startswith("captum:")]
    assert names == [f"captum:{n}" for n in ("Saliency", "InputXGradient", "LayerGradCam", "IntegratedGradients",
                                              "Occlusion", "FeatureAblation")]  # fmt: skip
    assert [m.name for m in methods.available("text") if m.name.startswith("captum:")] == ["captum:IntegratedGradients"]
    for name in names:
        assert methods.match(name) == [methods.get(name)]
        assert methods.match(name.partition(":")[2].lower()) == [methods.get(name)]
        assert methods.get(name).cls.get_name() == name
    assert [m.name for m in methods.match("gradcam")] == ["Grad-CAM"]  # the package's own keeps its name


def test_bad_options_are_errors_that_name_them(sim):
    with pytest.raises(ValueError, match="`n_steps` must be a positive int; got 0"):
        CaptumIntegratedGradients(sim, n_steps=0)
    with pytest.raises(ValueError, match="`internal_batch_size` must be a positive int; got -1"):
        CaptumIntegratedGradients(sim, internal_batch_size=-1)
    with pytest.raises(ValueError, match="`perturbations_per_eval` must be a positive int; got True"):
        CaptumOcclusion(sim, perturbations_per_eval=True)
    tsim = cg.TextImageSimilarity(make_clip(2), image_embeds=torch.randn(2, 16))
    with pytest.raises(TypeError, match=r"captum:Occlusion explains image wrappers only; got a text wrapper"):
        CaptumOcclusion(tsim)


def test_layer_grad_cam_without_a_patch_embedding_is_a_type_error_saying_so():
    pytest.importorskip("open_clip", reason="needs the openclip extra")
    from captum_gradeclip.zoo import load_shapes_clip

    model, _ = load_shapes_clip("resnet")
    rsim = cg.ImageTextSimilarity(model, text_embeds=torch.randn(2, model.text_projection.shape[1]))
    with pytest.raises(TypeError, match=r"captum:LayerGradCam explains the patch embedding .* has no patch embedding"):
        CaptumLayerGradCam(rsim)
    maps = CaptumSaliency(rsim).attribute(torch.randn(1, 3, 128, 128), target=0)  # pixel methods apply
    assert maps.shape == (1, 1, 4, 4)
