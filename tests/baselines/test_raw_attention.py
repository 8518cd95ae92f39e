"""Raw attention equals the model's own eager attention row of the pooled token."""

from __future__ import annotations

import pytest
import torch

import captum_gradeclip as cg
from captum_gradeclip.baselines import RawAttention
from tests.baselines.conftest import eos_positions, grid, text_outputs, vision_outputs, word_mask
from tests.conftest import make_clip, random_texts


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_image_map_is_the_cls_row_averaged_over_heads(attn):
    model = make_clip(1, attn=attn)
    x = torch.randn(2, 3, 32, 48)
    sim = cg.ImageTextSimilarity(model, text_embeds=torch.randn(3, 16))
    maps = RawAttention(sim).attribute(x, target=2)
    oracle_model = make_clip(1)  # eager, same weights
    with torch.no_grad():
        probs = vision_outputs(oracle_model, x).attentions[-1].mean(1)[:, 0, 1:]
    torch.testing.assert_close(maps, grid(probs, x), rtol=1e-4, atol=1e-6)
    every = RawAttention(sim).attribute(x)
    assert every.shape == (2, 3, 4, 6)
    assert torch.equal(every[:, :1], maps) and torch.equal(every[:, 2:], maps)


def test_layer_argument_reads_that_block():
    model = make_clip(2)
    x = torch.randn(1, 3, 32, 32)
    sim = cg.ImageTextSimilarity(model, text_embeds=torch.randn(1, 16))
    maps = RawAttention(sim, layer=model.vision_model.encoder.layers[0]).attribute(x, target=0)
    with torch.no_grad():
        probs = vision_outputs(model, x).attentions[0].mean(1)[:, 0, 1:]
    torch.testing.assert_close(maps, grid(probs, x), rtol=1e-4, atol=1e-6)


def test_text_scores_are_the_eos_row_over_words():
    model = make_clip(3)
    ids, mask = random_texts(3, 8, seed=4)
    tsim = cg.TextImageSimilarity(model, image_embeds=torch.randn(2, 16))
    scores = RawAttention(tsim).attribute(ids, target=1, additional_forward_args=(mask,))
    with torch.no_grad():
        probs = text_outputs(model, ids, mask).attentions[-1].mean(1)
    rows = probs[torch.arange(3), eos_positions(ids)]
    torch.testing.assert_close(scores, rows * word_mask(ids, mask), rtol=1e-4, atol=1e-6)
