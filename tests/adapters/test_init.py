"""The adapter registry (``get_adapter``) and the guarantees every loader shares."""

from __future__ import annotations

import contextlib
import sys

import pytest
import torch
from torch import nn

import captum_gradeclip as cg
from captum_gradeclip import adapters
from captum_gradeclip.adapters import ADAPTERS, Adapter, ImageTower
from captum_gradeclip.adapters.hf_vit import HFViTClassifierAdapter
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
    assert ADAPTERS[:6] == adapters._SHIPPED and len(adapters._SHIPPED) == 6  # a new loader's module comes after


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


CLIP_ROLES = ("ImageTower", "TextTower", "Scorer", "ResidualAccess", "TokenProjection")


@pytest.mark.parametrize("loader", [*LOADERS, "vit_classifier"])
def test_every_adapter_declares_its_roles_and_the_pooling_kind(loader):
    spec = LOADERS.get(loader)
    model = make_vit_classifier(0) if spec is None else spec.load(0)
    adapter = cg.get_adapter(model)
    if spec is None:  # the classifier has no text tower, and no member that only raises
        assert adapter.capabilities() == ("ImageTower", "Classifier") and adapter.is_classifier
        assert not hasattr(adapter, "embed_texts") and not hasattr(adapter, "logit_scale")
        with pytest.raises(TypeError, match=r"ViTForImageClassification .* has no `embed_texts`: .* role `TextTower`"):
            adapter.embed_texts  # noqa: B018 (a member of a role the adapter does not declare)
        with pytest.raises(TypeError, match=r"explaining texts needs a text tower .* ViTForImageClassification"):
            adapter.attention_blocks("text")
    else:
        assert adapter.capabilities() == CLIP_ROLES and not adapter.is_classifier
    pooled = loader.endswith("resnet") or loader == "siglip"  # a ResNet's attention pool, SigLIP's head
    assert adapter.attention_pool("image") is pooled and adapter.attention_pool("text") is False
    last = adapter.attention_blocks("image")[-1]
    with adapter.probe(last, lambda _record, o: o) as record:
        adapter.embed_images(torch.randn(1, 3, adapter.image_size()[0], adapter.image_size()[1]), True)
    assert (record.q.shape[1] == 1 != record.k.shape[1]) is pooled  # the declared kind is what the block does


class ImageOnly(Adapter, ImageTower):
    """A test-side adapter with an image tower and nothing else (the classifier's parts, without its head)."""

    loader_name = "image-only test"
    embed_images = HFViTClassifierAdapter.embed_images
    image_blocks = HFViTClassifierAdapter.image_blocks
    probe = HFViTClassifierAdapter.probe
    out_projection = HFViTClassifierAdapter.out_projection
    patch_size = HFViTClassifierAdapter.patch_size
    image_size = HFViTClassifierAdapter.image_size
    num_channels = HFViTClassifierAdapter.num_channels

    @classmethod
    def matches(cls, model: object) -> bool:
        return True


def test_a_missing_role_is_a_clear_error_naming_the_loader(monkeypatch):
    monkeypatch.setattr(adapters, "ADAPTERS", [ImageOnly])
    model = make_vit_classifier(0)
    with pytest.raises(TypeError) as info:
        cg.TextImageSimilarity(model, image_embeds=torch.randn(2, 32))
    assert str(info.value) == (
        "TextImageSimilarity needs a text tower (the adapter role `TextTower`), which the image-only test adapter "
        "lacks (it declares: ImageTower)"
    )
    with pytest.raises(TypeError, match=r"ImageTextSimilarity needs image-text scores .*`Scorer`.* image-only"):
        cg.ImageTextSimilarity(model, text_embeds=torch.randn(2, 32))
    with pytest.raises(TypeError, match=r"not an image classifier \(image-only test\)"):
        cg.ImageClassification(model)
    adapter = cg.get_adapter(model)
    assert adapter.require(ImageTower, "x") is adapter and len(adapter.attention_blocks("image")) == 2
    with pytest.raises(TypeError, match="Grad-CAM needs the adapter capability `probe_layer`, which the image-only"):
        from captum_gradeclip.adapters.dense import capability

        capability(type("Sim", (), {"adapter": adapter})(), "probe_layer", "Grad-CAM")


def test_a_new_adapter_module_in_the_package_is_found(tmp_path, monkeypatch):
    (tmp_path / "toy_loader.py").write_text(
        "from captum_gradeclip.adapters.base import Adapter, ImageTower\n"
        "class Half(Adapter, ImageTower):  # abstract: not a loader\n"
        "    pass\n"
        "class Toy(Adapter):\n"
        "    matches = classmethod(lambda cls, model: False)\n"
        "    probe = out_projection = lambda self, *args: None\n"
    )
    monkeypatch.setattr(adapters, "__path__", [*adapters.__path__, str(tmp_path)])
    try:
        found = [c for c in adapters._discover() if c.__module__ == "captum_gradeclip.adapters.toy_loader"]
        assert [c.__name__ for c in found] == ["Toy"]  # the abstract Half is not a loader
        assert found[0].capabilities() == ()
    finally:
        with contextlib.suppress(KeyError):
            del sys.modules["captum_gradeclip.adapters.toy_loader"]


@pytest.mark.parametrize("loader", ["openai-vit", "open_clip-vit"])
def test_the_adapter_converts_a_model_the_loader_s_way(loader):
    model = LOADERS[loader].load(0)
    converted = adapters.adapter_class(model).convert(model, torch.float16)
    norms = {p.dtype for m in converted.modules() if isinstance(m, nn.LayerNorm) for p in m.parameters()}
    assert norms == ({torch.float32} if loader == "openai-vit" else {torch.float16})  # OpenAI: convert_weights
    if loader == "openai-vit":
        with pytest.raises(ValueError, match="float16 only"):
            adapters.adapter_class(model).convert(model, torch.bfloat16)
