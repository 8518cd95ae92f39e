"""transformers SiglipModel: the MAP pooling head's probe as the query; the bidirectional text tower pooled last."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import captum_gradeclip as cg
from captum_gradeclip.adapters.hf_siglip import HFSiglipAdapter
from tests.adapters.conftest import (
    assert_every_target_equals_per_pair,
    assert_fast_equals_general,
    cosine_scores,
    loosened_map,
    make_siglip,
)
from tests.conftest import count_hooks, rel_err

TOL = 1e-4
WIDTH = 32
PAD = 1  # the tiny config's pad (and end-of-text) id


def siglip_image_oracle(model, x, refs, cols, heads=None):
    """Grad-ECLIP on the pooling head, from its attention-probability gradients (``heads=1``: paper mode)."""
    head = model.vision_model.head
    attn = head.attention
    h = model.vision_model(pixel_values=x, interpolate_pos_encoding=True).last_hidden_state  # the head's input
    n, t, c = h.shape
    heads = heads or attn.num_heads
    d = c // heads
    w, b = attn.in_proj_weight, attn.in_proj_bias
    q = F.linear(head.probe.expand(n, 1, c), w[:c], b[:c])
    k, v = F.linear(h, w[c : 2 * c], b[c : 2 * c]), F.linear(h, w[2 * c :], b[2 * c :])
    qh = q.reshape(n, 1, heads, d).transpose(1, 2)
    kh, vh = (z.reshape(n, t, heads, d).transpose(1, 2) for z in (k, v))
    probs = torch.softmax(qh @ kh.transpose(-1, -2) / d**0.5, dim=-1)
    y = attn.out_proj((probs @ vh).transpose(1, 2).reshape(n, 1, c))
    emb = (y + head.mlp(head.layernorm(y)))[:, 0]
    if heads == attn.num_heads:
        want = model.get_image_features(pixel_values=x, interpolate_pos_encoding=True).pooler_output
        assert torch.allclose(emb, want, atol=1e-5), "the oracle must reproduce the model"
    s = cosine_scores(emb, refs)[torch.arange(n), cols].sum()
    grad = torch.autograd.grad(s, probs)[0][:, :, 0]
    keys = torch.ones(n, t, dtype=torch.bool)
    maps = torch.relu(loosened_map(grad, q[:, 0], k, heads, keys))
    return maps.reshape(n, 1, x.shape[-2] // 8, x.shape[-1] // 8)


def siglip_text_oracle(model, ids, mask, refs, cols, layers):
    """Token scores from eager attention probabilities: query = last position, keys = attended positions."""
    out = model.text_model(input_ids=ids, attention_mask=mask, output_attentions=True, output_hidden_states=True)
    s = cosine_scores(out.pooler_output, refs)[torch.arange(len(ids)), cols].sum()
    keys = torch.ones_like(ids, dtype=torch.bool) if mask is None else mask.bool()
    heads = model.config.text_config.num_attention_heads
    depth = len(out.attentions)
    total = 0
    for layer_idx in range(depth - layers, depth):
        grad = torch.autograd.grad(s, out.attentions[layer_idx], retain_graph=True)[0][:, :, -1]
        layer = model.text_model.encoder.layers[layer_idx]
        h = layer.layer_norm1(out.hidden_states[layer_idx])
        q, k = layer.self_attn.q_proj(h), layer.self_attn.k_proj(h)
        total = total + loosened_map(grad, q[:, -1], k, heads, keys)
    words = keys & (ids != PAD)
    words[:, -1] = False
    return torch.relu(total) * words


def test_recognised_and_the_probe_is_the_query():
    model = make_siglip(0)
    adapter = cg.get_adapter(model)
    assert type(adapter) is HFSiglipAdapter
    assert adapter.image_prefix_tokens == 0
    assert adapter.attention_blocks("image") == [model.vision_model.head.attention]
    with adapter.probe(model.vision_model.head.attention, lambda _r, o: o) as record:
        model.get_image_features(pixel_values=torch.randn(2, 3, 32, 32))
    assert record.q.shape == (2, 1, WIDTH) and record.k.shape == (2, 16, WIDTH) and record.o.shape == (2, 1, WIDTH)
    assert count_hooks(model) == 0


@pytest.mark.parametrize("mode", ["native", "paper"])
@pytest.mark.parametrize("size", [(32, 32), (32, 48)])
def test_image_maps_match_pooling_head_oracle(mode, size):
    model = make_siglip(1)
    x, refs, cols = torch.randn(3, 3, *size), torch.randn(3, WIDTH), torch.tensor([0, 2, 1])
    sim = cg.ImageTextSimilarity(model, text_embeds=refs)
    got = cg.GradECLIP(sim, mode=mode).attribute(x, target=cols.tolist())
    want = siglip_image_oracle(model, x, refs, cols, heads=1 if mode == "paper" else None)
    assert got.shape == (3, 1, size[0] // 8, size[1] // 8)
    assert want.abs().max() > 0
    assert rel_err(got, want) <= TOL
    if mode == "paper":
        assert rel_err(got, cg.GradECLIP(sim).attribute(x, target=cols.tolist())) > 1e-2


@pytest.mark.parametrize("masked", [False, True])
def test_text_scores_match_oracle(masked):
    model = make_siglip(2)
    ids = torch.randint(2, 50, (3, 8), generator=torch.Generator().manual_seed(2))
    ids[0, 5:] = PAD  # end-of-text, then padding to the fixed length: the last position is padding
    ids[1, 7] = PAD
    mask = (ids != PAD).long() if masked else None
    if masked:
        mask[:, -1] = 1  # the pooled position stays attended
    refs, cols = torch.randn(2, WIDTH), torch.tensor([1, 0, 1])
    tsim = cg.TextImageSimilarity(model, image_embeds=refs)
    got = cg.GradECLIP(tsim).attribute(ids, target=cols.tolist(), additional_forward_args=(mask,))
    want = siglip_text_oracle(model, ids, mask, refs, cols, layers=2)
    assert want.abs().max() > 0
    assert rel_err(got, want) <= TOL
    assert (got[:, -1] == 0).all() and (got[ids == PAD] == 0).all()
    assert (got[2, :-1] != 0).any() and got[2, 0] == want[2, 0]  # no start token: position 0 is a word


def test_fast_path_batching_and_logit_bias(monkeypatch):
    model = make_siglip(3)
    sim = cg.ImageTextSimilarity(model, text_embeds=torch.randn(3, WIDTH))
    x = torch.randn(2, 3, 32, 40)
    assert_fast_equals_general(sim, x, monkeypatch, targets=(None, [2, 0]))
    assert_every_target_equals_per_pair(sim, x)
    ids = torch.randint(2, 50, (2, 8))
    with torch.no_grad():
        # a random SigLIP starts with bias 0 and scale 1, which would hide a wrong sign or a missing factor
        model.logit_bias.fill_(-2.5)
        model.logit_scale.fill_(1.5)
        out = model(input_ids=ids, pixel_values=x, interpolate_pos_encoding=True)
        logit = cg.ImageTextSimilarity(model, texts={"input_ids": ids}, score="logit")(x)
    assert torch.allclose(logit, out.logits_per_image, atol=1e-5)
    assert_every_target_equals_per_pair(cg.TextImageSimilarity(model, image_embeds=torch.randn(2, WIDTH)), ids)


def test_tower_without_pooling_head_is_refused():
    model = make_siglip(4)
    model.vision_model.use_head = False
    with pytest.raises(ValueError, match="pooling head"):
        cg.GradECLIP(cg.ImageTextSimilarity(model, text_embeds=torch.randn(2, WIDTH)))
