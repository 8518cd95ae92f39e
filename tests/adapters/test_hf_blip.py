"""transformers BlipForImageTextRetrieval, image-text contrastive (ITC) path: fused-qkv ViT and BERT text tower."""

from __future__ import annotations

import pytest
import torch

import captum_gradeclip as cg
from captum_gradeclip.adapters.hf_blip import HFBlipRetrievalAdapter
from tests.adapters.conftest import (
    EMBED,
    assert_every_target_equals_per_pair,
    assert_fast_equals_general,
    blip_texts,
    cosine_scores,
    loosened_map,
    make_blip,
)
from tests.conftest import rel_err

TOL = 1e-4
SEP, PAD = 3, 0  # the tiny config's ids (blip_texts)


def blip_image_oracle(model, x, refs, cols):
    vision = model.vision_model
    out = vision(pixel_values=x, interpolate_pos_encoding=True, output_attentions=True, output_hidden_states=True)
    emb = model.vision_proj(out.last_hidden_state[:, 0])
    s = cosine_scores(emb, refs)[torch.arange(len(x)), cols].sum()
    grad = torch.autograd.grad(s, out.attentions[-1])[0][:, :, 0]
    layer = vision.encoder.layers[-1]
    q, k, _ = layer.self_attn.qkv(layer.layer_norm1(out.hidden_states[-2])).chunk(3, dim=-1)
    keys = torch.ones(q.shape[:2], dtype=torch.bool)
    keys[:, 0] = False
    maps = torch.relu(loosened_map(grad, q[:, 0], k, layer.self_attn.num_heads, keys))[:, 1:]
    return maps.reshape(len(x), 1, x.shape[-2] // 8, x.shape[-1] // 8)


def blip_text_oracle(model, ids, mask, refs, cols):
    enc = model.text_encoder
    out = enc(input_ids=ids, attention_mask=mask, output_attentions=True, output_hidden_states=True)
    s = cosine_scores(model.text_proj(out.last_hidden_state[:, 0]), refs)[torch.arange(len(ids)), cols].sum()
    keys = mask.bool()
    total = 0
    for layer_idx, layer in enumerate(enc.encoder.layer):
        grad = torch.autograd.grad(s, out.attentions[layer_idx], retain_graph=True)[0][:, :, 0]
        h = out.hidden_states[layer_idx]  # post-norm BERT: q and k come from the layer input itself
        q, k = layer.attention.self.query(h), layer.attention.self.key(h)
        total = total + loosened_map(grad, q[:, 0], k, layer.attention.self.num_attention_heads, keys)
    words = keys & (ids != SEP) & (ids != PAD)
    words[:, 0] = False
    return torch.relu(total) * words


def test_recognised_and_itc_score_is_the_models():
    model = make_blip(0)
    assert type(cg.get_adapter(model)) is HFBlipRetrievalAdapter
    x = torch.randn(2, 3, 32, 32)
    ids, mask = blip_texts(3)
    with torch.no_grad():
        want = model(input_ids=ids, pixel_values=x, attention_mask=mask, use_itm_head=False).itm_score
        got = cg.ImageTextSimilarity(model, texts={"input_ids": ids, "attention_mask": mask})(x)
    assert got.shape == want.shape == (2, 3)
    assert torch.allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("size", [(32, 32), (48, 32)])
def test_image_maps_match_attention_probability_oracle(size):
    model = make_blip(1)
    x, refs, cols = torch.randn(3, 3, *size), torch.randn(3, EMBED), torch.tensor([1, 0, 2])
    got = cg.GradECLIP(cg.ImageTextSimilarity(model, text_embeds=refs)).attribute(x, target=cols.tolist())
    want = blip_image_oracle(model, x, refs, cols)
    assert want.abs().max() > 0
    assert rel_err(got, want) <= TOL


def test_text_scores_match_oracle_pooled_at_cls():
    model = make_blip(2)
    ids, mask = blip_texts(4, seed=2)
    refs, cols = torch.randn(2, EMBED), torch.tensor([0, 1, 1, 0])
    tsim = cg.TextImageSimilarity(model, image_embeds=refs)
    got = cg.GradECLIP(tsim).attribute(ids, target=cols.tolist(), additional_forward_args=(mask,))
    want = blip_text_oracle(model, ids, mask, refs, cols)
    assert want.abs().max() > 0
    assert rel_err(got, want) <= TOL
    assert (got[:, 0] == 0).all() and (got[(ids == SEP) | (ids == PAD)] == 0).all()


def test_fast_path_and_batching(monkeypatch):
    model = make_blip(3)
    sim = cg.ImageTextSimilarity(model, text_embeds=torch.randn(3, EMBED))
    x = torch.randn(2, 3, 40, 32)
    assert_fast_equals_general(sim, x, monkeypatch)
    assert_every_target_equals_per_pair(sim, x)
    ids, mask = blip_texts(2, seed=3)
    assert_every_target_equals_per_pair(cg.TextImageSimilarity(model, image_embeds=torch.randn(2, EMBED)), ids, mask)
