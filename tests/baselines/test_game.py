"""GAME against autograd on the model's eager attention probabilities."""

from __future__ import annotations

import pytest
import torch

import captum_gradeclip as cg
from captum_gradeclip.baselines import GAME
from captum_gradeclip.baselines.game import game_relevance
from tests.baselines.conftest import (
    eos_positions,
    grid,
    image_scores,
    text_outputs,
    text_scores,
    vision_outputs,
    word_mask,
)
from tests.conftest import make_clip, random_texts


def _relevance(attentions, scalar):
    eye = torch.eye(attentions[0].shape[-1])
    r = eye.expand(attentions[0].shape[0], -1, -1)
    for a in attentions:
        (g,) = torch.autograd.grad(scalar, a, retain_graph=True)
        r = r + (g * a).clamp_min(0).mean(1) @ r
    return r.detach()


def test_zero_gradients_give_the_identity():
    probs = [torch.softmax(torch.randn(2, 3, 6, 6), -1) for _ in range(4)]
    relevance = game_relevance(probs, [torch.zeros_like(p) for p in probs])
    torch.testing.assert_close(relevance, torch.eye(6).expand(2, 6, 6))
    negative = game_relevance(probs, [-torch.ones_like(p) for p in probs])  # clamped to zero as well
    torch.testing.assert_close(negative, torch.eye(6).expand(2, 6, 6))


@pytest.mark.parametrize("layers", [1, 2])
def test_image_matches_eager_attention_gradients(layers):
    model = make_clip(4, vision_layers=layers)
    x = torch.randn(2, 3, 32, 32)
    t = torch.randn(3, 16)
    maps = GAME(cg.ImageTextSimilarity(model, text_embeds=t)).attribute(x, target=[2, 0])
    out = vision_outputs(model, x)
    s = image_scores(model, out, t)[torch.arange(2), torch.tensor([2, 0])].sum()
    oracle = _relevance(out.attentions, s)[:, 0, 1:]
    torch.testing.assert_close(maps, grid(oracle, x), rtol=1e-3, atol=1e-6)
    assert maps.abs().sum() > 0


def test_every_target_equals_one_target_at_a_time():
    model = make_clip(5)
    x = torch.randn(2, 3, 32, 32)
    sim = cg.ImageTextSimilarity(model, text_embeds=torch.randn(3, 16))
    every = GAME(sim).attribute(x)
    for j in range(3):
        torch.testing.assert_close(every[:, j : j + 1], GAME(sim).attribute(x, target=j))


def test_text_matches_eager_causal_attention_gradients():
    model = make_clip(6)
    ids, mask = random_texts(3, 8, seed=2)
    e = torch.randn(2, 16)
    scores = GAME(cg.TextImageSimilarity(model, image_embeds=e)).attribute(
        ids, target=1, additional_forward_args=(mask,)
    )
    out = text_outputs(model, ids, mask)
    s = text_scores(model, out, e)[:, 1].sum()
    rows = _relevance(out.attentions, s)[torch.arange(3), eos_positions(ids)]
    torch.testing.assert_close(scores, rows * word_mask(ids, mask), rtol=1e-3, atol=1e-6)
