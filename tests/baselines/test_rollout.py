"""Rollout of one layer is that layer's row-normalised (A + I); of several, their product."""

from __future__ import annotations

import torch

import captum_gradeclip as cg
from captum_gradeclip.baselines import AttentionRollout
from captum_gradeclip.baselines.rollout import rollout
from tests.baselines.conftest import eos_positions, grid, text_outputs, vision_outputs, word_mask
from tests.conftest import make_clip, random_texts


def _normalised(a):
    a = a.mean(1) + torch.eye(a.shape[-1])
    return a / a.sum(-1, keepdim=True)


def test_one_layer_model_gives_row_normalised_attention_plus_identity():
    model = make_clip(0, vision_layers=1)
    x = torch.randn(2, 3, 32, 32)
    sim = cg.ImageTextSimilarity(model, text_embeds=torch.randn(2, 16))
    maps = AttentionRollout(sim).attribute(x, target=0)
    with torch.no_grad():
        a = vision_outputs(model, x).attentions[0]
    torch.testing.assert_close(maps, grid(_normalised(a)[:, 0, 1:], x), rtol=1e-4, atol=1e-6)


def test_several_layers_multiply_last_to_first():
    model = make_clip(1, vision_layers=3)
    x = torch.randn(1, 3, 32, 32)
    sim = cg.ImageTextSimilarity(model, text_embeds=torch.randn(2, 16))
    maps = AttentionRollout(sim).attribute(x, target=1)
    with torch.no_grad():
        a = [_normalised(t) for t in vision_outputs(model, x).attentions]
    oracle = a[2] @ a[1] @ a[0]
    torch.testing.assert_close(maps, grid(oracle[:, 0, 1:], x), rtol=1e-4, atol=1e-6)
    two = AttentionRollout(sim, layers=2).attribute(x, target=1)
    torch.testing.assert_close(two, grid((a[2] @ a[1])[:, 0, 1:], x), rtol=1e-4, atol=1e-6)


def test_rows_of_rollout_sum_to_one():
    probs = [torch.softmax(torch.randn(2, 4, 5, 5), -1) for _ in range(3)]
    torch.testing.assert_close(rollout(probs).sum(-1), torch.ones(2, 5))


def test_text_rollout_at_eos_with_padding():
    model = make_clip(2, text_layers=2)
    ids, mask = random_texts(3, 8, seed=1)
    tsim = cg.TextImageSimilarity(model, image_embeds=torch.randn(1, 16))
    scores = AttentionRollout(tsim).attribute(ids, target=0, additional_forward_args=(mask,))
    with torch.no_grad():
        a = [_normalised(t) for t in text_outputs(model, ids, mask).attentions]
    rows = (a[1] @ a[0])[torch.arange(3), eos_positions(ids)]
    torch.testing.assert_close(scores, rows * word_mask(ids, mask), rtol=1e-4, atol=1e-6)
