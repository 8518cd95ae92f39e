"""The Captum contract's checks at their edges: every accepted ``forward_func`` form and ``device_ids``, and an
error that names what was given for everything else (the mutation run's survivors)."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

import captum_gradeclip as cg
from captum_gradeclip.attr.contract import check_blocks, check_layer_input, check_options, resolve_wrapper


@pytest.fixture
def sim(clip):
    return cg.ImageTextSimilarity(clip, text_embeds=torch.randn(2, 16))


def test_the_wrapper_its_forward_and_a_data_parallel_of_it_resolve_to_the_wrapper(sim):
    assert resolve_wrapper(sim) is sim
    assert resolve_wrapper(sim.forward) is sim
    assert resolve_wrapper(nn.DataParallel(sim)) is sim


def test_other_forms_are_refused_naming_what_was_given(sim):
    with pytest.raises(TypeError, match=r"; got the bound method ImageTextSimilarity\.similarity$"):
        resolve_wrapper(sim.similarity)
    with pytest.raises(TypeError, match=r"; got Linear$"):
        resolve_wrapper(nn.Linear(2, 2))
    with pytest.raises(TypeError, match=r"; got DataParallel wrapping Linear$"):
        resolve_wrapper(nn.DataParallel(nn.Linear(2, 2)))
    with pytest.raises(TypeError, match=r"; got method$"):  # a bound method of another object
        resolve_wrapper(nn.Linear(2, 2).forward)


def test_device_ids_must_be_the_data_parallels_own_exactly(sim):
    parallel = nn.DataParallel(sim)
    parallel.device_ids = [0, 1]  # as on a two-GPU machine: the check reads the ids only
    assert resolve_wrapper(parallel, [0, 1]) is sim
    assert resolve_wrapper(parallel, (0, 1)) is sim  # any sequence of the same ids
    assert resolve_wrapper(parallel, None) is sim
    for ids in ([0], [1], [1, 0], [0, 1, 2]):  # a strict subset, another order, a superset
        own = r"Leave `device_ids=None` \(or pass the DataParallel's own \[0, 1\]\)$"
        with pytest.raises(ValueError, match=rf"^`device_ids` {re.escape(repr(ids))} cannot be honoured: .*{own}"):
            resolve_wrapper(parallel, ids)
    with pytest.raises(ValueError) as caught:
        resolve_wrapper(sim, [])  # no DataParallel: no ids at all, not even an empty list
    assert str(caught.value) == (  # the whole message: what happens instead, and what to do
        "`device_ids` [] cannot be honoured: the explanation hooks the wrapped module and runs the whole batch on "
        "one device, so it never gathers layer outputs across devices. Leave `device_ids=None`"
    )


def test_layer_input_is_false_or_a_clear_error():
    check_layer_input(False, "GradECLIP")
    with pytest.raises(ValueError) as caught:
        check_layer_input(True, "GradECLIP")
    assert str(caught.value) == (  # the whole message: why there is no layer input, and what to do
        "attribute_to_layer_input=True is not available for GradECLIP: the method is defined inside the attention "
        "block (from its queries, keys and values, or the attention it computes, and the score's gradient there), "
        "not on a layer's input or output tensor, so there is no layer input to attribute to. Leave "
        "attribute_to_layer_input=False"
    )
    for value, name in [(0, "int"), (None, "NoneType"), ("False", "str")]:
        with pytest.raises(TypeError, match=rf"^`attribute_to_layer_input` must be a bool; got {name}$"):
            check_layer_input(value, "GradECLIP")


def test_a_block_the_adapter_cannot_read_is_named_with_its_type_and_the_loader(sim, clip):
    check_blocks(sim, sim.explained_blocks(), "GradECLIP")
    fc = clip.vision_model.encoder.layers[0].mlp.fc1
    with pytest.raises(TypeError) as info:
        check_blocks(sim, [*sim.explained_blocks(), fc], "RISE")
    message = str(info.value)
    assert message.startswith(
        "RISE cannot explain the layer `vision_model.encoder.layers.0.mlp.fc1` (Linear): it is not an attention "
        "block the transformers CLIPModel adapter can read ("
    )
    assert info.value.__cause__ is not None and type(info.value.__cause__).__name__ in message


def test_unknown_options_are_named_with_the_ones_the_method_takes():
    class NoOptions:
        def __init__(self, forward_func):
            pass

    class Open:
        def __init__(self, forward_func, **kwargs):
            pass

    check_options(cg.GradECLIP, {"layers": 2, "mode": "native"})
    check_options(Open, {"anything": 1})  # **kwargs: every name is taken
    with pytest.raises(TypeError, match=r"^GradECLIP has no option 'n_mask'; its options: layer, device_ids, "):
        check_options(cg.GradECLIP, {"n_mask": 5, "layers": 2})
    with pytest.raises(TypeError, match=r"^GradECLIP has no options 'a', 'b'; its options: "):
        check_options(cg.GradECLIP, {"a": 1, "b": 2})
    with pytest.raises(TypeError, match=r"^NoOptions has no option 'a'; its options: none$"):
        check_options(NoOptions, {"a": 1})
