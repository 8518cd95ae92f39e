"""Token Grad-CAM against autograd on the model's hidden states."""

from __future__ import annotations

import torch

import captum_gradeclip as cg
from captum_gradeclip.baselines import TokenGradCAM
from tests.baselines.conftest import grid, image_scores, text_outputs, text_scores, vision_outputs, word_mask
from tests.conftest import make_clip, random_texts


def test_image_map_is_relu_of_patch_averaged_gradient_times_tokens():
    model = make_clip(7)
    x = torch.randn(2, 3, 32, 32)
    t = torch.randn(3, 16)
    maps = TokenGradCAM(cg.ImageTextSimilarity(model, text_embeds=t)).attribute(x, target=1)
    out = vision_outputs(model, x)
    tokens = out.hidden_states[-2]  # input of the last layer
    (g,) = torch.autograd.grad(image_scores(model, out, t)[:, 1].sum(), tokens)
    alpha = g[:, 1:].mean(1, keepdim=True)
    oracle = torch.relu((alpha * tokens[:, 1:]).sum(-1))
    torch.testing.assert_close(maps, grid(oracle, x), rtol=1e-4, atol=1e-6)
    assert (maps >= 0).all() and maps.abs().sum() > 0


def test_text_averages_the_gradient_over_words_only():
    model = make_clip(8)
    ids, mask = random_texts(3, 8, seed=5)
    e = torch.randn(2, 16)
    scores = TokenGradCAM(cg.TextImageSimilarity(model, image_embeds=e)).attribute(
        ids, target=0, additional_forward_args=(mask,)
    )
    out = text_outputs(model, ids, mask)
    tokens = out.hidden_states[-2]
    (g,) = torch.autograd.grad(text_scores(model, out, e)[:, 0].sum(), tokens)
    words = word_mask(ids, mask)[:, :, None].float()
    alpha = (g * words).sum(1, keepdim=True) / words.sum(1, keepdim=True)
    oracle = torch.relu((alpha * tokens).sum(-1)) * words[..., 0]
    torch.testing.assert_close(scores, oracle.detach(), rtol=1e-4, atol=1e-6)
