"""CLIP Surgery: the v-v path oracle and the redundancy-removal invariant."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import captum_gradeclip as cg
from captum_gradeclip.baselines import CLIPSurgery
from captum_gradeclip.baselines.clip_surgery import feature_surgery
from tests.baselines.conftest import vision_outputs
from tests.conftest import make_clip


def _vv_tokens(model, x, layers):
    """The v-v path by hand: x_start + sum over the last blocks of out_proj(softmax(v v^T / sqrt(d)) v)."""
    heads = model.config.vision_config.num_attention_heads
    with torch.no_grad():
        hidden = vision_outputs(model, x).hidden_states
        depth = len(hidden) - 1
        path = hidden[depth - layers]
        for i in range(depth - layers, depth):
            layer = model.vision_model.encoder.layers[i]
            v = layer.self_attn.v_proj(layer.layer_norm1(hidden[i]))
            n, t, c = v.shape
            vh = v.reshape(n, t, heads, c // heads).transpose(1, 2)
            a = torch.softmax(vh @ vh.transpose(-1, -2) / (c // heads) ** 0.5, -1)
            path = path + layer.self_attn.out_proj((a @ vh).transpose(1, 2).reshape(n, t, c))
        return model.visual_projection(model.vision_model.post_layernorm(path))


@pytest.mark.parametrize("layers", [1, 2])
def test_vv_path_with_redundant_prompt_matches_oracle(layers):
    model = make_clip(10)
    x = torch.randn(2, 3, 32, 32)
    t, r = torch.randn(2, 16), torch.randn(16)
    maps = CLIPSurgery(cg.ImageTextSimilarity(model, text_embeds=t), layers=layers, redundant_embeds=r).attribute(x)
    feats = F.normalize(_vv_tokens(model, x, layers), dim=-1)
    oracle = feats @ (F.normalize(t, dim=-1) - F.normalize(r, dim=0)).T
    torch.testing.assert_close(maps, oracle[:, 1:].permute(0, 2, 1).reshape(2, 2, 4, 4), rtol=1e-4, atol=1e-5)


def test_surgery_maps_sum_to_zero_over_the_texts():
    model = make_clip(11)
    x = torch.randn(2, 3, 32, 32)
    maps = CLIPSurgery(cg.ImageTextSimilarity(model, text_embeds=torch.randn(4, 16))).attribute(x)
    assert maps.shape == (2, 4, 4, 4)
    torch.testing.assert_close(maps.sum(1), torch.zeros(2, 4, 4), atol=1e-6, rtol=0)
    assert maps.abs().max() > 1e-3


def test_feature_surgery_weights_follow_the_pooled_softmax():
    tokens, pooled, texts = torch.randn(1, 1, 8), torch.randn(1, 8), torch.randn(2, 8)
    out = feature_surgery(tokens, pooled, texts, temperature=2.0)
    tn, tx = F.normalize(tokens[0, 0], dim=0), F.normalize(texts, dim=-1)
    p = (2.0 * F.normalize(pooled[0], dim=0) @ tx.T).softmax(-1)
    w = p / p.mean()
    f = tn * tx * w[:, None]
    torch.testing.assert_close(out[0, 0], (f - f.mean(0)).sum(-1))


def test_single_text_without_redundant_prompt_is_plain_cosine():
    model = make_clip(12)
    x = torch.randn(1, 3, 32, 32)
    t = torch.randn(1, 16)
    maps = CLIPSurgery(cg.ImageTextSimilarity(model, text_embeds=t), layers=2).attribute(x, target=0)
    oracle = F.normalize(_vv_tokens(model, x, 2), dim=-1) @ F.normalize(t, dim=-1).T
    torch.testing.assert_close(maps, oracle[:, 1:, 0].reshape(1, 1, 4, 4), rtol=1e-4, atol=1e-5)


def test_bad_redundant_embeds():
    sim = cg.ImageTextSimilarity(make_clip(0), text_embeds=torch.randn(2, 16))
    with pytest.raises(ValueError, match="redundant_embeds"):
        CLIPSurgery(sim, redundant_embeds=torch.randn(3))
