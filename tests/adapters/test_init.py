"""The adapter registry (``get_adapter``) and the guarantees every loader shares."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import captum_gradeclip as cg
from captum_gradeclip.adapters import ADAPTERS
from captum_gradeclip.attr.grad_eclip import GradECLIP
from tests.adapters.conftest import LOADERS, Loader, make_vit_classifier
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


@pytest.mark.parametrize(
    "loader",
    ["openai-vit", "openai-resnet", "open_clip-vit-seq-first", "open_clip-resnet", "siglip", "blip", "vit_classifier"],
)
def test_models_are_left_unchanged_also_after_an_exception(loader, monkeypatch):
    spec = LOADERS.get(loader)  # None: the image classifier, which has no text tower
    model = make_vit_classifier(0) if spec is None else spec.load(0)
    size = 32 if spec is None else spec.side
    params = list(model.parameters())
    params[0].requires_grad_(False)  # mixed flags: a restore to "all on" would be caught
    params[-1].requires_grad_(False)
    before = model_snapshot(model)
    if spec is None:
        sim = cg.ImageClassification(model)
    else:
        sim = cg.ImageTextSimilarity(model, text_embeds=torch.randn(2, spec.embed))
    x = torch.randn(1, 3, size, size)
    for mode, qk_source in (("native", "raw"), ("paper", "raw"), ("paper", "out_proj")):
        explainer = GradECLIP(sim, mode=mode, qk_source=qk_source)
        fast = explainer.attribute(x, target=0)
        explainer.fast_path = False
        general = explainer.attribute(x, target=0)
        assert fast.shape == general.shape == (1, 1, *sim.adapter.patch_grid(x))
        assert torch.isfinite(general).all() and (general >= 0).all() and general.abs().max() > 0
        assert torch.allclose(fast, general, rtol=1e-4, atol=1e-4 * float(general.abs().max()))
    if spec is not None:
        ids, mask = spec.texts(2, 0)
        tsim = cg.TextImageSimilarity(model, image_embeds=torch.randn(2, spec.embed))
        GradECLIP(tsim).attribute(ids, target=1, additional_forward_args=(mask,))
    assert_unchanged(model, before)

    def boom(*_args):
        # really mid-attribution: parameters frozen, or no graph at all on the fast path (torch.func only)
        assert not torch.is_grad_enabled() or not any(p.requires_grad for p in model.parameters())
        raise RuntimeError("boom")

    monkeypatch.setattr(GradECLIP, "_layer_map", boom)
    for fast in (True, False):
        explainer = GradECLIP(sim)
        explainer.fast_path = fast
        with pytest.raises(RuntimeError, match="boom"):
            explainer.attribute(x, target=0)
    assert_unchanged(model, before)


def test_only_a_missing_extra_skips_a_loader_test():
    def raises(error):
        def build(seed):
            raise error

        return Loader(build, 32, (4, 4), 16, LOADERS["hf"].texts)

    for name in ("open_clip", "clip", "torchvision.transforms"):
        with pytest.raises(pytest.skip.Exception, match="needs a loader extra"):
            raises(ModuleNotFoundError(f"No module named {name!r}", name=name)).load(0)
    # in CI, with the extras installed, a broken import inside a loader must fail, not skip
    with pytest.raises(ImportError, match="cannot import name"):
        raises(ImportError("cannot import name 'CLIP' from 'open_clip'", name="open_clip")).load(0)
    with pytest.raises(ModuleNotFoundError, match=r"captum_gradeclip\.nope"):
        raises(ModuleNotFoundError("No module named 'captum_gradeclip.nope'", name="captum_gradeclip.nope")).load(0)
    with pytest.raises(ModuleNotFoundError, match="ftfy"):  # a dependency of an installed extra
        raises(ModuleNotFoundError("No module named 'ftfy'", name="ftfy")).load(0)
