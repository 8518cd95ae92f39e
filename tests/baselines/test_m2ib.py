"""M2IB: the capacity formula at the initial bottleneck, and what the optimisation does."""

from __future__ import annotations

import math

import pytest
import torch

import captum_gradeclip as cg
from captum_gradeclip.baselines import M2IB
from captum_gradeclip.baselines.m2ib import capacity
from tests.baselines.conftest import grid, image_scores, text_outputs, vision_outputs, word_mask
from tests.conftest import make_clip, random_texts


def test_capacity_is_the_gaussian_kl_and_zero_when_closed():
    alpha = torch.tensor([-30.0, 0.0, 2.0])
    r = torch.tensor([1.5, -0.5, 2.0])
    lam = torch.sigmoid(alpha)
    s = 1 - lam
    kl = torch.log(1 / s) + (s**2 + (lam * r) ** 2 - 1) / 2  # KL(N(lam r, s^2) || N(0, 1))
    torch.testing.assert_close(capacity(alpha, r), kl)
    assert abs(float(capacity(alpha, r)[0])) < 1e-6


def test_no_steps_gives_the_capacity_of_the_initial_bottleneck():
    model = make_clip(14, vision_layers=4)
    x = torch.randn(2, 3, 32, 32)
    sim = cg.ImageTextSimilarity(model, text_embeds=torch.randn(2, 16))
    maps = M2IB(sim, steps=0, init=1.0).attribute(x, target=0)  # default layer: block 3 of 4
    with torch.no_grad():
        r = vision_outputs(model, x).hidden_states[3][:, 1:]
    standardized = (r - r.mean(1, keepdim=True)) / r.std(1, keepdim=True)
    lam = 1 / (1 + math.exp(-1.0))
    oracle = (0.5 * ((1 - lam) ** 2 + (lam * standardized) ** 2 - 1) - math.log(1 - lam)).sum(-1)
    torch.testing.assert_close(maps, grid(oracle, x), rtol=1e-4, atol=1e-4)


def _first_adam_step_oracle(model, x, text_embeds, cols, beta, lr, init, seed):
    """M2IB after one Adam step, from its closed form: Adam's first step moves every alpha by
    ``-lr * g / (|g| + eps)`` for the gradient ``g`` of ``beta * mean KL - S(z)`` (the score is maximised)."""
    block = model.vision_model.encoder.layers[3]
    with torch.no_grad():
        r = vision_outputs(model, x).hidden_states[3]  # the input of block 3 of 4, CLS first
    patches = r[:, 1:]
    mu, sigma = patches.mean(1, keepdim=True), patches.std(1, keepdim=True)
    standardized = (patches - mu) / sigma
    # every example draws its noise from its own generator seeded with `seed`
    noise = torch.stack([torch.randn(r.shape[1:], generator=torch.Generator().manual_seed(seed)) for _ in x])[:, 1:]
    alpha = torch.full(patches.shape, init, requires_grad=True)
    lam = torch.sigmoid(alpha)
    z = torch.cat([r[:, :1], mu + sigma * (lam * standardized + (1 - lam) * noise)], 1)
    handle = block.register_forward_pre_hook(lambda _m, args, kwargs: ((z, *args[1:]), kwargs), with_kwargs=True)
    try:
        score = image_scores(model, vision_outputs(model, x), text_embeds)[torch.arange(len(x)), cols]
    finally:
        handle.remove()
    lam_kl = 0.5 * ((1 - lam) ** 2 + (lam * standardized) ** 2 - 1) - torch.log(1 - lam)
    loss = (beta * lam_kl.mean((1, 2)) - score).sum()
    (g,) = torch.autograd.grad(loss, alpha)
    alpha1 = init - lr * g / (g.abs() + 1e-8)
    lam1 = torch.sigmoid(alpha1)
    return grid((0.5 * ((1 - lam1) ** 2 + (lam1 * standardized) ** 2 - 1) - torch.log(1 - lam1)).sum(-1), x)


@pytest.mark.parametrize("target", [[0, 0], [1, 0]])
def test_one_step_is_adams_first_step_towards_a_higher_score_of_the_target(target):
    model = make_clip(14, vision_layers=4)
    torch.manual_seed(2)
    x, text_embeds = torch.randn(2, 3, 32, 32), torch.randn(2, 16)
    sim = cg.ImageTextSimilarity(model, text_embeds=text_embeds)
    maps = M2IB(sim, steps=1, beta=0.5, lr=0.3, init=1.0, seed=3).attribute(x, target=target)
    oracle = _first_adam_step_oracle(model, x, text_embeds, torch.tensor(target), 0.5, 0.3, 1.0, 3)
    torch.testing.assert_close(maps, oracle, rtol=1e-4, atol=1e-4)


def test_different_targets_give_different_maps():
    model = make_clip(14, vision_layers=4)
    torch.manual_seed(2)
    x = torch.randn(2, 3, 32, 32)
    sim = cg.ImageTextSimilarity(model, text_embeds=torch.randn(2, 16))
    explainer = M2IB(sim, steps=3)
    both = explainer.attribute(x, target=None)  # (2, 2, h, w): one run per target
    zero, one = explainer.attribute(x, target=0), explainer.attribute(x, target=1)
    torch.testing.assert_close(both[:, :1], zero)
    torch.testing.assert_close(both[:, 1:], one)
    # the maps share a large offset (the capacity of the open bottleneck); they differ by a good part of their spread
    spread = zero.amax((1, 2, 3)) - zero.amin((1, 2, 3))
    assert ((zero - one).abs().amax((1, 2, 3)) > 0.3 * spread).all()


def test_a_heavy_information_penalty_closes_the_bottleneck():
    model = make_clip(15)
    x = torch.randn(2, 3, 32, 32)
    sim = cg.ImageTextSimilarity(model, text_embeds=torch.randn(2, 16))
    start = M2IB(sim, steps=0).attribute(x, target=1)
    squeezed = M2IB(sim, steps=4, beta=100.0).attribute(x, target=1)
    assert (squeezed.sum((1, 2, 3)) < 0.5 * start.sum((1, 2, 3))).all()
    free = M2IB(sim, steps=4, beta=0.0).attribute(x, target=1)
    assert (free.sum((1, 2, 3)) > squeezed.sum((1, 2, 3))).all()


def test_text_bottleneck_scores_words_only():
    model = make_clip(16)
    ids, mask = random_texts(3, 8, seed=6)
    tsim = cg.TextImageSimilarity(model, image_embeds=torch.randn(2, 16))
    scores = M2IB(tsim, steps=2).attribute(ids, target=1, additional_forward_args=(mask,))
    words = word_mask(ids, mask)
    assert scores.shape == ids.shape
    assert (scores[~words] == 0).all() and (scores[words] > 0).all()
    with torch.no_grad():
        text_outputs(model, ids, mask)  # the model still runs as before


def test_bad_arguments():
    sim = cg.ImageTextSimilarity(make_clip(0), text_embeds=torch.randn(1, 16))
    with pytest.raises(ValueError, match="steps"):
        M2IB(sim, steps=-1)
    with pytest.raises(ValueError, match="beta"):
        M2IB(sim, beta=-1.0)
