"""The model is never left changed: hooks, parameters, requires_grad and train/eval flags."""

from __future__ import annotations

import pytest
import torch

import captum_gradeclip as cg
from captum_gradeclip.attr.grad_eclip import GradECLIP
from tests.conftest import assert_unchanged, count_hooks, make_clip, model_snapshot, random_texts


@pytest.fixture
def mixed_model():
    """Mixed flags, so that a restore to 'all on' or 'all eval' would be caught."""
    model = make_clip(0)
    model.vision_model.encoder.layers[0].requires_grad_(False)
    model.text_model.train()
    model.vision_model.encoder.layers[1].mlp.train()
    return model


@pytest.mark.parametrize("mode", ["native", "paper"])
def test_success_leaves_model_unchanged(mixed_model, mode):
    before = model_snapshot(mixed_model)
    sim = cg.ImageTextSimilarity(mixed_model, text_embeds=torch.randn(2, 16))
    cg.GradECLIP(sim, mode=mode).attribute(torch.randn(2, 3, 32, 32))
    ids, mask = random_texts(2, 6)
    tsim = cg.TextImageSimilarity(mixed_model, image_embeds=torch.randn(2, 16))
    cg.GradECLIP(tsim, mode=mode).attribute(ids, target=1, additional_forward_args=(mask,))
    assert_unchanged(mixed_model, before)


@pytest.mark.parametrize(
    ("where", "layers"),
    [("_substitute", 2), ("_pooled_output", 1), ("_layer_map", 1), ("_layer_map", 2), ("_combine", 1)],
)
def test_exception_mid_attribution_leaves_model_unchanged(mixed_model, monkeypatch, where, layers):
    before = model_snapshot(mixed_model)
    sim = cg.ImageTextSimilarity(mixed_model, text_embeds=torch.randn(2, 16))
    explainer = cg.GradECLIP(sim, layers=layers)

    def boom(*args, **kwargs):
        # really mid-attribution: parameters are frozen (or, on the fast path, which differentiates with
        # torch.func only, no graph is recorded at all), and inside the forward the probes are in place
        assert not torch.is_grad_enabled() or not any(p.requires_grad for p in mixed_model.parameters())
        assert where != "_substitute" or count_hooks(mixed_model) > 0
        raise RuntimeError("boom")

    monkeypatch.setattr(GradECLIP, where, boom)
    with pytest.raises(RuntimeError, match="boom"):
        explainer.attribute(torch.randn(1, 3, 32, 32), target=0)
    assert_unchanged(mixed_model, before)


def test_bad_target_after_forward_leaves_model_unchanged(mixed_model):
    before = model_snapshot(mixed_model)
    sim = cg.ImageTextSimilarity(mixed_model, text_embeds=torch.randn(2, 16))
    with pytest.raises(ValueError, match="target"):
        cg.GradECLIP(sim).attribute(torch.randn(1, 3, 32, 32), target=5)
    assert_unchanged(mixed_model, before)
