"""``torch.inference_mode()``: every method leaves it inside the call and gives the same explanation (issue 27).

Inference mode is thread-local: an explanation switches it off for its own work (its inputs, inference
tensors, are cloned to normal ones), so the result is the one computed outside it, for every method and both
sides; a model or wrapper made under inference mode (whose tensors autograd cannot use) is one clear error.
"""

from __future__ import annotations

import pytest
import torch

import captum_gradeclip as cg
from captum_gradeclip import methods as registry
from tests.conftest import assert_unchanged, make_clip, model_snapshot, random_texts

CASES = [
    pytest.param(m, side, id=f"{registry.key(m.name)}-{side}") for m in registry.available() for side in m.modalities
]
#: Gradient methods with several blocks too: the graph must start inside the call, not before it.
LAYERS = {"Grad-ECLIP (native)": {"layers": 2}, "Grad-ECLIP (paper)": {"layers": 2}}


def _setup(side: str):
    model = make_clip(0)
    g = torch.Generator().manual_seed(1)
    refs = torch.randn(3, 16, generator=g)
    if side == "image":
        return model, cg.ImageTextSimilarity(model, text_embeds=refs), torch.randn(2, 3, 32, 32, generator=g), ()
    ids, mask = random_texts(2, 7, seed=2)
    return model, cg.TextImageSimilarity(model, image_embeds=refs), ids, (mask,)


@pytest.mark.parametrize(("method", "side"), CASES)
def test_every_method_works_under_inference_mode_and_gives_the_same_result(method, side):
    model, sim, x, extra = _setup(side)
    snapshot = model_snapshot(model)
    options = {**method.quick, **LAYERS.get(method.name, {})}
    explainer = method.build(sim, **options)
    kwargs = {"additional_forward_args": extra} if extra else {}
    expected = explainer.attribute(x, target=[0, 2], **kwargs)
    with torch.inference_mode():
        inputs = x.clone()  # an inference tensor, as a service's preprocessing under inference_mode makes it
        extra_inf = tuple(a.clone() for a in extra)
        assert inputs.is_inference()
        got = explainer.attribute(inputs, target=[0, 2], **({"additional_forward_args": extra_inf} if extra else {}))
        assert torch.is_inference_mode_enabled()  # the caller's mode is back after the call
    assert torch.equal(got, expected)
    assert_unchanged(model, snapshot)


@pytest.mark.parametrize(("method", "side"), CASES)
def test_a_wrapper_made_under_inference_mode_is_the_same_clear_error_for_every_method(method, side):
    """References embedded under inference mode cannot take part in autograd: every method, gradient-free or
    not, refuses the wrapper the same way, before any work, and leaves the model as it was."""
    model, _, x, extra = _setup(side)
    snapshot = model_snapshot(model)
    refs = torch.randn(3, 16, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():  # the wrapper's reference buffer becomes an inference tensor
        sim = (
            cg.ImageTextSimilarity(model, text_embeds=refs)
            if side == "image"
            else cg.TextImageSimilarity(model, image_embeds=refs)
        )
    assert sim.reference_embeds.is_inference()
    explainer = method.build(sim, **method.quick)
    kwargs = {"additional_forward_args": extra} if extra else {}
    expected = r"holds tensors made under inference_mode .* build the wrapper outside torch\.inference_mode\(\)"
    with pytest.raises(RuntimeError, match=expected):
        explainer.attribute(x, target=0, **kwargs)
    assert_unchanged(model, snapshot)


@pytest.mark.parametrize("method", [m for m in registry.available() if "image" in m.modalities], ids=lambda m: m.name)
def test_a_model_loaded_under_inference_mode_is_the_same_clear_error(method):
    with torch.inference_mode():
        model = make_clip(0)
    assert next(model.parameters()).is_inference()
    sim = cg.ImageTextSimilarity(model, text_embeds=torch.randn(3, 16))
    with pytest.raises(RuntimeError, match=r"holds tensors made under inference_mode .* load the model"):
        method.build(sim, **method.quick).attribute(torch.randn(1, 3, 32, 32), target=0)
