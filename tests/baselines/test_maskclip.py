"""MaskCLIP: each patch's value through the last block's residual, MLP and head."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import captum_gradeclip as cg
from captum_gradeclip.baselines import MaskCLIP
from tests.baselines.conftest import vision_outputs
from tests.conftest import make_clip


def test_matches_the_value_path_oracle():
    model = make_clip(9)
    x = torch.randn(2, 3, 32, 48)
    t = torch.randn(3, 16)
    maps = MaskCLIP(cg.ImageTextSimilarity(model, text_embeds=t)).attribute(x)
    layer = model.vision_model.encoder.layers[-1]
    with torch.no_grad():
        h = vision_outputs(model, x).hidden_states[-2]
        y = h + layer.self_attn.out_proj(layer.self_attn.v_proj(layer.layer_norm1(h)))
        y = y + layer.mlp(layer.layer_norm2(y))
        feats = model.visual_projection(model.vision_model.post_layernorm(y))
        cos = F.normalize(feats, dim=-1) @ F.normalize(t, dim=-1).T  # (N, T, M)
    oracle = cos[:, 1:].permute(0, 2, 1).reshape(2, 3, 4, 6)
    torch.testing.assert_close(maps, oracle, rtol=1e-4, atol=1e-5)


def test_text_wrapper_is_refused():
    tsim = cg.TextImageSimilarity(make_clip(0), image_embeds=torch.randn(1, 16))
    with pytest.raises(TypeError, match="image"):
        MaskCLIP(tsim)
