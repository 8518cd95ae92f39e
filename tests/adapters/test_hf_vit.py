"""transformers ViTForImageClassification through cg.ImageClassification: the score is a class logit."""

from __future__ import annotations

import pytest
import torch

import captum_gradeclip as cg
from captum_gradeclip.adapters.hf_vit import HFViTClassifierAdapter
from tests.adapters.conftest import (
    assert_every_target_equals_per_pair,
    assert_fast_equals_general,
    loosened_map,
    make_vit_classifier,
)
from tests.conftest import make_clip, rel_err

TOL = 1e-4


def vit_oracle(model, x, classes, score="logit", layers=1):
    """Sum over blocks of ReLU(sum_h lambda^h_i dS/da^h_{0,i}) for S = the class logit (or probability)."""
    out = model.vit(pixel_values=x, interpolate_pos_encoding=True, output_attentions=True, output_hidden_states=True)
    logits = model.classifier(out.last_hidden_state[:, 0])
    scores = logits if score == "logit" else logits.softmax(-1)
    s = scores[torch.arange(len(x)), classes].sum()
    keys = torch.ones(len(x), out.attentions[0].shape[-1], dtype=torch.bool)
    keys[:, 0] = False
    depth = len(out.attentions)
    total = 0
    for layer_idx in range(depth - layers, depth):
        grad = torch.autograd.grad(s, out.attentions[layer_idx], retain_graph=True)[0][:, :, 0]
        layer = model.vit.layers[layer_idx]
        h = layer.layernorm_before(out.hidden_states[layer_idx])
        q, k = layer.attention.q_proj(h), layer.attention.k_proj(h)
        total = total + torch.relu(loosened_map(grad, q[:, 0], k, model.config.num_attention_heads, keys))
    return total[:, 1:].reshape(len(x), 1, x.shape[-2] // 8, x.shape[-1] // 8)


def test_scores_are_the_models_logits():
    model = make_vit_classifier(0)
    clf = cg.ImageClassification(model)
    assert type(clf.adapter) is HFViTClassifierAdapter and clf.num_references == 5
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(clf(x), model(pixel_values=x).logits, atol=1e-6)
        probs = cg.ImageClassification(model, score="softmax")(x)
        assert torch.allclose(probs, model(pixel_values=x).logits.softmax(-1), atol=1e-6)


@pytest.mark.parametrize("score", ["logit", "softmax"])
@pytest.mark.parametrize("size", [(32, 32), (32, 48)])
def test_maps_match_attention_probability_oracle(score, size):
    model = make_vit_classifier(1)
    x, classes = torch.randn(3, 3, *size), torch.tensor([4, 0, 2])
    clf = cg.ImageClassification(model, score=score)
    got = cg.GradECLIP(clf).attribute(x, target=classes.tolist())
    want = vit_oracle(model, x, classes, score)
    assert got.shape == (3, 1, size[0] // 8, size[1] // 8)
    assert want.abs().max() > 0
    assert rel_err(got, want) <= TOL
    two = cg.GradECLIP(clf, layers=2).attribute(x, target=classes.tolist())
    assert rel_err(two, vit_oracle(model, x, classes, score, layers=2)) <= TOL


def test_fast_path_and_every_class(monkeypatch):
    model = make_vit_classifier(2, labels=4)
    clf = cg.ImageClassification(model)
    x = torch.randn(2, 3, 40, 32)
    assert_fast_equals_general(clf, x, monkeypatch, targets=(None, [3, 1]))
    assert_every_target_equals_per_pair(clf, x)


def test_wrong_wrapper_or_score_is_a_clear_error():
    model = make_vit_classifier(3)
    with pytest.raises(TypeError, match="ImageClassification"):
        cg.ImageTextSimilarity(model, text_embeds=torch.randn(2, 32))
    with pytest.raises(TypeError, match="ImageClassification"):
        cg.TextImageSimilarity(model, image_embeds=torch.randn(2, 32))
    with pytest.raises(ValueError, match="score"):
        cg.ImageClassification(model, score="cosine")
    with pytest.raises(TypeError, match="not an image classifier"):
        cg.ImageClassification(make_clip(0))
