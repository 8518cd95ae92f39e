"""Every baseline: the wrapper contract, Captum-style shapes and a model left as it was."""

from __future__ import annotations

import pytest
import torch

import captum_gradeclip as cg
from captum_gradeclip.baselines import (
    GAME,
    M2IB,
    RISE,
    AttentionRollout,
    CLIPSurgery,
    MaskCLIP,
    RawAttention,
    TokenGradCAM,
)
from tests.baselines.conftest import IDS, METHODS
from tests.conftest import assert_unchanged, make_clip, model_snapshot, random_texts


@pytest.fixture(scope="module")
def model():
    m = make_clip(20)
    m.vision_model.encoder.layers[0].requires_grad_(False)
    m.text_model.train()
    return m


@pytest.mark.parametrize(("method", "kwargs"), METHODS, ids=IDS)
def test_shapes_tuples_and_untouched_model(model, method, kwargs):
    before = model_snapshot(model)
    sim = cg.ImageTextSimilarity(model, text_embeds=torch.randn(3, 16))
    x = torch.randn(2, 3, 32, 48)
    explainer = method(sim, **kwargs)
    size = (32, 48) if method is RISE else (4, 6)
    with torch.no_grad():
        one = explainer.attribute(x, target=1)
    assert one.shape == (2, 1, *size) and torch.isfinite(one).all()
    every = explainer.attribute(x)
    assert every.shape == (2, 3, *size)
    (as_tuple,) = explainer.attribute((x,), target=1)
    torch.testing.assert_close(as_tuple, one)
    if "text" in method.modalities:
        ids, mask = random_texts(2, 7, seed=3)
        text = method(cg.TextImageSimilarity(model, image_embeds=torch.randn(2, 16)), **kwargs)
        scores = text.attribute(ids, target=0, additional_forward_args=(mask,))
        assert scores.shape == ids.shape
        assert (scores[:, 0] == 0).all()  # SOS never scores
        assert text.attribute(ids, additional_forward_args=(mask,)).shape == (2, 2, 7)
    else:
        with pytest.raises(TypeError, match="image"):
            method(cg.TextImageSimilarity(model, image_embeds=torch.randn(2, 16)), **kwargs)
    assert_unchanged(model, before)


@pytest.mark.parametrize(("method", "kwargs"), METHODS, ids=IDS)
def test_exception_inside_the_forward_leaves_model_unchanged(model, method, kwargs, monkeypatch):
    before = model_snapshot(model)
    sim = cg.ImageTextSimilarity(model, text_embeds=torch.randn(2, 16))
    explainer = method(sim, **kwargs)
    calls = {"n": 0}
    real = type(sim.adapter).embed_images

    def boom(self, *args, **kw):
        calls["n"] += 1
        if calls["n"] > 1:  # after the input check, inside the method
            raise RuntimeError("boom")
        return real(self, *args, **kw)

    monkeypatch.setattr(type(sim.adapter), "embed_images", boom)
    with pytest.raises(RuntimeError, match="boom"):
        explainer.attribute(torch.randn(1, 3, 32, 32), target=0)
    monkeypatch.undo()
    assert_unchanged(model, before)


def test_bad_wrapper_target_and_inputs():
    model = make_clip(0)
    with pytest.raises(TypeError, match="forward_func"):
        GAME(model)
    sim = cg.ImageTextSimilarity(model, text_embeds=torch.randn(2, 16))
    with pytest.raises(ValueError, match="target"):
        GAME(sim).attribute(torch.randn(1, 3, 32, 32), target=5)
    with pytest.raises(ValueError, match="pixel_values"):
        RawAttention(sim).attribute(torch.randn(1, 3, 30, 32), target=0)
    with pytest.raises(ValueError, match="layers"):
        AttentionRollout(sim, layers=9)
    assert GAME.get_name() == "GAME" and RawAttention.get_name() == "Raw attention"


def test_attention_pools_are_refused_where_tokens_do_not_attend_to_tokens():
    pytest.importorskip("clip", reason="needs the openai extra: pip install -e '.[openai]'")
    from tests.adapters.conftest import EMBED, make_openai_clip

    sim = cg.ImageTextSimilarity(make_openai_clip(0, resnet=True), text_embeds=torch.randn(2, EMBED))
    x = torch.randn(1, 3, 96, 96)
    for method in (AttentionRollout, GAME):
        with pytest.raises(TypeError, match="attention pool"):
            method(sim).attribute(x, target=0)
    pooled = RawAttention(sim).attribute(x, target=0)  # the pool's own query row, over the 3x3 grid
    assert pooled.shape == (1, 1, 3, 3)
    assert 0 < float(pooled.sum()) < 1  # one softmax row, less the mean token's share


def test_a_loader_without_residual_access_is_refused_by_name():
    from tests.adapters.conftest import make_vit_classifier

    sim = cg.ImageClassification(make_vit_classifier(0))
    for method in (TokenGradCAM, MaskCLIP, CLIPSurgery, M2IB):
        with pytest.raises(TypeError, match=r"forward_func|probe_layer|project_tokens"):
            method(sim)


def test_a_masked_token_before_eos_scores_zero_in_every_text_method():
    # text deletion's "pad" mode makes such holes: the token is no word, whatever the method
    model = make_clip(12, text_layers=2)
    ids, mask = random_texts(3, 9, seed=11)
    ids[:, 1:7], ids[:, 7], ids[:, 8] = torch.arange(10, 16), 3, 1  # 6 words, EOS, one padding
    mask[:] = 1
    mask[:, 8] = 0
    holes = torch.tensor([1, 3, 6])
    mask[torch.arange(3), holes] = 0
    tsim = cg.TextImageSimilarity(model, image_embeds=torch.randn(2, 16))
    scoring_holes = []
    for method, kwargs in [(cg.GradECLIP, {}), *METHODS]:
        if "text" not in getattr(method, "modalities", ("text",)):
            continue
        scores = method(tsim, **kwargs).attribute(ids, target=1, additional_forward_args=(mask,))
        assert (scores[:, 1:7] != 0).sum() > 3, method.__name__  # the other words do score
        if (scores[torch.arange(3), holes] != 0).any():
            scoring_holes.append(method.__name__)
    assert not scoring_holes
