"""sensitivity_max and infidelity in one line, on images and tokens."""

from __future__ import annotations

import pytest
import torch
from captum.attr import Saliency

import captum_gradeclip as cg
from captum_gradeclip.baselines import GAME
from captum_gradeclip.metrics import infidelity, sensitivity
from captum_gradeclip.metrics.robustness import word_swap
from tests.conftest import EOS, make_clip, random_texts


@pytest.fixture(scope="module")
def model():
    return make_clip(6)


def test_sensitivity_is_zero_without_perturbation_and_positive_with(model):
    sim = cg.ImageTextSimilarity(model, text_embeds=torch.randn(3, 16))
    x = torch.randn(2, 3, 32, 32)
    explainer = cg.GradECLIP(sim)
    still = sensitivity(explainer, x, target=1, n_perturb_samples=2, perturb_radius=0.0)
    torch.testing.assert_close(still, torch.zeros(2))
    delta = 0.5 * torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))

    def shift(inputs, _radius):  # one known perturbation
        return tuple(t + delta for t in inputs) if isinstance(inputs, tuple) else inputs + delta

    game = GAME(sim)
    moved = sensitivity(game, (x,), target=[0, 2], n_perturb_samples=1, perturb_func=shift)
    before, after = game.attribute(x, target=[0, 2]), game.attribute(x + delta, target=[0, 2])
    expected = (after - before).flatten(1).norm(dim=1) / before.flatten(1).norm(dim=1)  # captum's relative norm
    assert (expected > 0.01).all()
    torch.testing.assert_close(moved, expected, rtol=1e-4, atol=1e-6)


def test_word_swap_changes_one_word_and_never_sos_or_eos(model):
    tsim = cg.TextImageSimilarity(model, image_embeds=torch.randn(2, 16))
    ids, _ = random_texts(50, 8, seed=2)
    out = word_swap(tsim, seed=1)(ids)
    changed = out != ids
    words = (torch.arange(8)[None] > 0) & (torch.arange(8)[None] < (ids == EOS).int().argmax(1, keepdim=True))
    assert (changed.sum(1) <= 1).all() and not (changed & ~words).any()  # only one word, never SOS, EOS, padding
    assert set(out[changed].tolist()) <= set(ids[words].tolist())  # the new word comes from the batch
    assert changed.any(1).float().mean() > 0.8  # a word stays the same only when it draws itself
    assert torch.equal(word_swap(tsim, seed=1)(ids), out) and not torch.equal(word_swap(tsim, seed=2)(ids), out)


def test_text_sensitivity_runs_on_token_scores(model):
    tsim = cg.TextImageSimilarity(model, image_embeds=torch.randn(2, 16))
    ids, mask = random_texts(3, 8, seed=3)
    explainer = cg.GradECLIP(tsim)
    value = sensitivity(explainer, ids, target=1, additional_forward_args=(mask,), n_perturb_samples=1)
    swapped = word_swap(tsim, seed=0)(ids)  # the default perturbation's one draw
    before = explainer.attribute(ids, target=1, additional_forward_args=(mask,))
    after = explainer.attribute(swapped, target=1, additional_forward_args=(mask,))
    expected = (after - before).norm(dim=1) / before.norm(dim=1).where(before.norm(dim=1) > 0, torch.ones(3))
    assert expected.max() > 0.01
    torch.testing.assert_close(value, expected, rtol=1e-4, atol=1e-6)


def test_infidelity_of_the_gradient_is_far_below_that_of_noise(model):
    sim = cg.ImageTextSimilarity(model, text_embeds=torch.randn(3, 16))
    x = torch.randn(2, 3, 32, 32)
    # any Captum attribution: here (N, C, H, W) pixel gradients
    grad = Saliency(sim).attribute(x.clone().requires_grad_(), target=0, abs=False)
    small = infidelity(sim, x, 0, attributions=grad, noise_std=1e-3, n_perturb_samples=8)
    noise = infidelity(sim, x, 0, attributions=torch.randn_like(grad), noise_std=1e-3, n_perturb_samples=8)
    assert (small < 0.05 * noise).all()


def test_infidelity_without_normalisation_tells_the_gradient_from_its_negation(model):
    # infidelity = E[(I . a - (f(x) - f(x - I)))^2]; for small noise f(x) - f(x - I) ~ I . grad, so the gradient
    # scores near 0 and its negation near E[(2 I . grad)^2] = 4 E[(I . grad)^2]. Perturbing x + I instead swaps them.
    sim = cg.ImageTextSimilarity(model, text_embeds=torch.randn(3, 16))
    x = torch.randn(2, 3, 32, 32)
    grad = Saliency(sim).attribute(x.clone().requires_grad_(), target=1, abs=False)
    kw = dict(noise_std=1e-2, n_perturb_samples=8, normalize=False)
    true = infidelity(sim, x, 1, attributions=grad, **kw)
    negated = infidelity(sim, x, 1, attributions=-grad, **kw)
    zero = infidelity(sim, x, 1, attributions=torch.zeros_like(grad), **kw)  # E[(f(x) - f(x - I))^2]
    assert (true < 0.01 * negated).all()
    torch.testing.assert_close(negated, 4 * zero, rtol=0.05, atol=0)


def test_infidelity_ignores_the_scale_of_maps_and_runs_on_text(model):
    sim = cg.ImageTextSimilarity(model, text_embeds=torch.randn(3, 16))
    x = torch.randn(2, 3, 32, 32)
    explainer = cg.GradECLIP(sim)
    maps = explainer.attribute(x, target=2)
    a = infidelity(explainer, x, 2, n_perturb_samples=4)
    b = infidelity(sim, x, 2, attributions=7.0 * maps, n_perturb_samples=4)
    torch.testing.assert_close(a, b)
    tsim = cg.TextImageSimilarity(model, image_embeds=torch.randn(2, 16))
    ids, mask = random_texts(3, 8, seed=4)
    explainer = cg.GradECLIP(tsim)
    # every word dropped: one known perturbation, I = 1 on the words, so infidelity = (sum of the words' scores
    # - (f(x) - f(x with the words padded)))^2
    value = infidelity(explainer, ids, 0, (mask,), drop_probability=1.0, n_perturb_samples=2, normalize=False)
    words = tsim.explain_context((ids,), (mask,)).output_mask
    scores = explainer.attribute(ids, target=0, additional_forward_args=(mask,))
    with torch.no_grad():
        drop = tsim(ids, mask)[:, 0] - tsim(ids.masked_fill(words, tsim.adapter.pad_token_id()), mask)[:, 0]
    expected = ((scores * words).sum(1) - drop) ** 2
    assert expected.min() > 0
    torch.testing.assert_close(value, expected, rtol=1e-4, atol=1e-8)
    with pytest.raises(ValueError, match="attributions"):
        infidelity(sim, x, 0)
    with pytest.raises(TypeError, match="explainer"):
        infidelity(Saliency(lambda t: t.sum((1, 2, 3))[:, None]), x, 0)
