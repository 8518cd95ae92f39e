"""Hypothesis property tests over random tiny CLIP architectures."""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import captum_gradeclip as cg
from tests.conftest import make_clip, rel_err

PROPERTY_SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def cases(draw):
    heads = draw(st.sampled_from([1, 2, 4]))
    width = heads * draw(st.sampled_from([4, 8]))
    depth = draw(st.integers(1, 3))
    patch = draw(st.sampled_from([4, 8]))
    model = make_clip(
        seed=draw(st.integers(0, 10_000)),
        attn=draw(st.sampled_from(["eager", "sdpa"])),
        heads=heads,
        width=width,
        vision_layers=depth,
        image_size=4 * patch,
        patch_size=patch,
    )
    size = (patch * draw(st.integers(2, 5)), patch * draw(st.integers(2, 5)))
    n, m = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    seed = draw(st.integers(0, 10_000))
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, *size, generator=g)
    text_embeds = torch.randn(m, 16, generator=g)
    options = dict(mode=draw(st.sampled_from(["native", "paper"])), layers=draw(st.integers(1, depth)))
    return model, x, text_embeds, options


@PROPERTY_SETTINGS
@given(cases())
def test_batched_equals_per_pair(case):
    model, x, text_embeds, options = case
    explainer = cg.GradECLIP(cg.ImageTextSimilarity(model, text_embeds=text_embeds), **options)
    every = explainer.attribute(x)
    for n in range(x.shape[0]):
        for j in range(text_embeds.shape[0]):
            single = explainer.attribute(x[n : n + 1], target=j)
            assert rel_err(every[n : n + 1, j : j + 1], single) <= 1e-4


@PROPERTY_SETTINGS
@given(cases(), st.floats(0.01, 100.0))
def test_invariant_to_scaling_the_text_embedding(case, scale):
    model, x, text_embeds, options = case
    a = cg.GradECLIP(cg.ImageTextSimilarity(model, text_embeds=text_embeds), **options).attribute(x)
    b = cg.GradECLIP(cg.ImageTextSimilarity(model, text_embeds=text_embeds * scale), **options).attribute(x)
    assert rel_err(b, a) <= 1e-5


@PROPERTY_SETTINGS
@given(cases())
def test_identical_across_two_runs(case):
    model, x, text_embeds, options = case
    explainer = cg.GradECLIP(cg.ImageTextSimilarity(model, text_embeds=text_embeds), **options)
    assert torch.equal(explainer.attribute(x), explainer.attribute(x))
