"""The adapter registry (``get_adapter``) and the guarantees every loader shares."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import captum_gradeclip as cg
from captum_gradeclip.adapters import ADAPTERS
from captum_gradeclip.attr.grad_eclip import GradECLIP
from tests.adapters.conftest import (
    EMBED,
    make_blip,
    make_open_clip,
    make_openai_clip,
    make_siglip,
    make_vit_classifier,
    openai_texts,
)
from tests.conftest import assert_unchanged, model_snapshot


def test_unknown_model_lists_every_supported_loader():
    with pytest.raises(TypeError) as info:
        cg.get_adapter(nn.Linear(2, 2))
    message = str(info.value)
    assert "torch.nn.modules.linear.Linear" in message
    for name in ("CLIPModel", "SiglipModel", "BlipForImageTextRetrieval", "ViTForImageClassification"):
        assert name in message
    assert "open_clip" in message and "OpenAI clip" in message
    assert len(ADAPTERS) == 6


def _blip_text():
    ids = torch.tensor([[2, 7, 8, 3, 0], [2, 9, 3, 0, 0]])
    return ids, (ids != 0).long()


LOADERS = {
    "openai_vit": (lambda: make_openai_clip(0), 32, lambda: (openai_texts(2), None), EMBED),
    "openai_resnet": (lambda: make_openai_clip(0, resnet=True), 96, lambda: (openai_texts(2), None), EMBED),
    "open_clip_vit": (lambda: make_open_clip(0, batch_first=False), 32, lambda: (openai_texts(2), None), EMBED),
    "open_clip_resnet": (lambda: make_open_clip(0, resnet=True), 96, None, EMBED),
    "siglip": (lambda: make_siglip(0), 32, lambda: (torch.randint(2, 50, (2, 6)), None), 32),
    "blip": (lambda: make_blip(0), 32, _blip_text, EMBED),
    "vit_classifier": (lambda: make_vit_classifier(0), 32, None, None),
}


@pytest.mark.parametrize("loader", list(LOADERS))
def test_models_are_left_unchanged_also_after_an_exception(loader, monkeypatch):
    build, size, texts, embed = LOADERS[loader]
    model = build()
    params = list(model.parameters())
    params[0].requires_grad_(False)  # mixed flags: a restore to "all on" would be caught
    params[-1].requires_grad_(False)
    before = model_snapshot(model)
    if embed is None:
        sim = cg.ImageClassification(model)
    else:
        sim = cg.ImageTextSimilarity(model, text_embeds=torch.randn(2, embed))
    x = torch.randn(1, 3, size, size)
    for mode, qk_source in (("native", "raw"), ("paper", "raw"), ("paper", "out_proj")):
        explainer = GradECLIP(sim, mode=mode, qk_source=qk_source)
        fast = explainer.attribute(x, target=0)
        explainer.fast_path = False
        general = explainer.attribute(x, target=0)
        assert fast.shape == general.shape == (1, 1, *sim.adapter.patch_grid(x))
        assert torch.isfinite(general).all() and (general >= 0).all() and general.abs().max() > 0
        assert torch.allclose(fast, general, rtol=1e-4, atol=1e-4 * float(general.abs().max()))
    if texts is not None:
        ids, mask = texts()
        tsim = cg.TextImageSimilarity(model, image_embeds=torch.randn(2, embed))
        GradECLIP(tsim).attribute(ids, target=1, additional_forward_args=(mask,))
    assert_unchanged(model, before)

    def boom(*_args):
        assert not any(p.requires_grad for p in model.parameters())  # really mid-attribution
        raise RuntimeError("boom")

    monkeypatch.setattr(GradECLIP, "_layer_map", boom)
    for fast in (True, False):
        explainer = GradECLIP(sim)
        explainer.fast_path = fast
        with pytest.raises(RuntimeError, match="boom"):
            explainer.attribute(x, target=0)
    assert_unchanged(model, before)
