"""The method registry, the one pipeline every method shares, and the published wrapper contract."""

from __future__ import annotations

import re

import pytest
import torch

import captum_gradeclip as cg
from captum_gradeclip import methods as registry
from captum_gradeclip.attr import AttentionAttribution, SimilarityAttribution
from captum_gradeclip.attr.contract import constructor_options
from captum_gradeclip.baselines import RISE
from tests.conftest import assert_unchanged, make_clip, model_snapshot, random_texts

SHIPPED = [
    "Grad-ECLIP (native)",
    "Grad-ECLIP (paper)",
    "Raw attention",
    "Rollout",
    "GAME",
    "Grad-CAM",
    "MaskCLIP",
    "CLIP Surgery",
    "RISE",
    "M2IB",
]


def test_the_registry_lists_every_shipped_method_in_table_order():
    names = [m.name for m in registry.available()]
    assert [n for n in names if n in SHIPPED] == SHIPPED  # a new method file adds itself after them
    text = [m.name for m in registry.available("text")]
    assert [n for n in text if n in SHIPPED] == [n for n in SHIPPED if n not in ("MaskCLIP", "CLIP Surgery", "RISE")]
    assert all("text" in registry.get(n).modalities for n in text)
    pooled = [m.name for m in registry.available("image", attention_pool=True)]
    assert "GAME" not in pooled and "Rollout" not in pooled and "RISE" in pooled
    every_class = {m.cls for m in registry.available()}
    assert {cg.GradECLIP, *(getattr(cg.baselines, n) for n in cg.baselines.__all__)} <= every_class
    assert all(issubclass(c, SimilarityAttribution) for c in every_class)


def test_get_and_bad_names():
    assert registry.get("Grad-ECLIP (paper)").kwargs == {"mode": "paper"}
    with pytest.raises(KeyError, match=r"no method named 'Nope'; registered: Grad-ECLIP \(native\), "):
        registry.get("Nope")
    with pytest.raises(ValueError, match="`modality` must be None, 'image' or 'text'; got 'audio'"):
        registry.available("audio")


def test_build_passes_the_options_a_class_takes_and_refuses_the_others():
    sim = cg.ImageTextSimilarity(make_clip(), text_embeds=torch.randn(2, 16))
    rise = registry.get("RISE").build(sim, n_masks=5, seed=4)
    assert isinstance(rise, RISE) and (rise.n_masks, rise.seed) == (5, 4)
    assert registry.get("RISE").build(sim, quick=True).n_masks == 8
    paper = registry.get("Grad-ECLIP (paper)").build(sim, mode="native", layers=1)
    assert paper.mode == "paper"  # the variant's own arguments win
    assert registry.get("Grad-ECLIP (paper)").options[:2] == ("layer", "device_ids")  # "mode" is the variant's
    assert "mode" not in registry.get("Grad-ECLIP (paper)").options
    with pytest.raises(TypeError, match=r"^RISE has no option 'n_mask'; its options: n_masks, grid, p, masks, "):
        registry.get("RISE").build(sim, n_mask=5)  # the misspelling
    with pytest.raises(TypeError, match=r"^RISE has no options 'steps', 'beta'; its options: n_masks, "):
        registry.get("RISE").build(sim, n_masks=5, steps=3, beta=1.0)
    with pytest.raises(TypeError, match=r"^Raw attention has no option 'layers'; its options: layer$"):
        registry.get("Raw attention").build(sim, layers=2)
    with pytest.raises(TypeError, match=r"^MaskCLIP has no option 'layer'; its options: none$"):
        registry.get("MaskCLIP").build(sim, layer=None)
    # one call valid for every variant (the command line's): a method without modes has the native one only
    assert registry.get("MaskCLIP").build(sim, mode="native").get_name() == "MaskCLIP"
    with pytest.raises(ValueError, match=r"^MaskCLIP has no modes; got mode='paper'"):
        registry.get("MaskCLIP").build(sim, mode="paper")


@pytest.mark.parametrize("method", registry.available(), ids=lambda m: m.name)
def test_every_constructor_refuses_an_unknown_option_listing_the_valid_ones(method):
    sim = cg.ImageTextSimilarity(make_clip(), text_embeds=torch.randn(2, 16))
    valid = constructor_options(method.cls)
    assert valid is not None
    with pytest.raises(TypeError, match=rf"^{method.cls.__name__} has no option 'bogus'; its options: ") as error:
        method.cls(sim, **method.kwargs, bogus=1)
    assert str(error.value).endswith(f"its options: {', '.join(valid) or 'none'}")
    with pytest.raises(TypeError, match=rf"^{re.escape(method.name)} has no option 'bogus'; its options: "):
        method.build(sim, bogus=1)


def test_registering_a_name_twice_is_an_error(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTERED", {})
    with pytest.raises(ValueError, match=r"a method named 'GAME' is registered already \(GAME\)"):
        registry.register("GAME")(RISE)


class _Uniform(SimilarityAttribution):
    """A toy method written the way a new baseline is: one hook; every token of the output scores 1."""

    def _maps(self, inputs, extra, columns, ctx):
        return torch.ones(len(inputs), len(columns), ctx.key_mask.shape[1], dtype=torch.float32)


def test_a_new_method_is_one_class_and_the_pipeline_does_the_rest(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTERED", {})
    registry.register("Uniform")(_Uniform)
    assert registry.available()[-1].cls is _Uniform

    model = make_clip()
    snapshot = model_snapshot(model)
    sim = cg.ImageTextSimilarity(model, text_embeds=torch.randn(3, 16))
    explainer = registry.get("Uniform").build(sim)
    x = torch.randn(2, 3, 32, 32)
    assert explainer.attribute(x, target=1).shape == (2, 1, 4, 4)  # the patch grid, CLS dropped
    assert explainer.attribute(x).shape == (2, 3, 4, 4)  # target=None: every column
    (as_tuple,) = explainer.attribute((x,), target=[0, 2])  # tuple in, tuple out
    assert as_tuple.shape == (2, 1, 4, 4)
    with pytest.raises(ValueError, match="`target` must index the wrapper's 3 output columns"):
        explainer.attribute(x, target=3)

    ids, mask = random_texts(2, 7)
    tsim = cg.TextImageSimilarity(model, image_embeds=torch.randn(2, 16))
    scores = _Uniform(tsim).attribute(ids, target=0, additional_forward_args=(mask,))
    assert scores.shape == ids.shape
    words = torch.zeros_like(scores, dtype=torch.bool)
    for i, length in enumerate(mask.sum(1).tolist()):
        words[i, 1 : length - 1] = True
    assert torch.equal(scores, words.float())  # SOS, EOS and padding score 0: the pipeline's output mask
    assert_unchanged(model, snapshot)


def test_attention_attribution_is_a_similarity_attribution():
    assert issubclass(AttentionAttribution, SimilarityAttribution)
    assert cg.GradECLIP.get_name() == "Grad-ECLIP" and cg.baselines.GAME.get_name() == "GAME"


def test_the_published_wrapper_contract():
    from captum_gradeclip.wrappers import _Similarity

    assert _Similarity is cg.SimilarityWrapper
    model = make_clip()
    for sim in (
        cg.ImageTextSimilarity(model, text_embeds=torch.randn(2, 16)),
        cg.TextImageSimilarity(model, image_embeds=torch.randn(2, 16)),
    ):
        assert isinstance(sim, cg.SimilarityWrapper) and sim.num_references == 2
    with pytest.raises(TypeError, match="ImageTextSimilarity"):
        cg.GradECLIP(model)  # the bare model is not a wrapper
