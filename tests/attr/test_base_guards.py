"""The fast path steps aside for every user hook it would bypass, and only for those (the mutation run's
survivors): module and global hooks, forward and backward, on the block, the layer around it or anything
above; never for hooks on what the fast path itself runs, nor for this package's own probe hooks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import captum_gradeclip as cg
from captum_gradeclip.adapters import thread_owned
from captum_gradeclip.attr.base import _hooks_the_tail_would_bypass
from tests.conftest import general_path, make_clip

module_hooks = nn.modules.module


def forward_hook(_module, _args, output):
    return output


def pre_hook(_module, _args):
    return None


def backward_hook(_module, _grad_in, _grad_out):
    return None


def backward_pre_hook(_module, _grad_out):
    return None


@pytest.fixture
def setting():
    sim = cg.ImageTextSimilarity(make_clip(), text_embeds=torch.randn(2, 16))
    explainer = cg.GradECLIP(sim)
    tail = sim.adapter.pooled_tail(explainer.blocks[0])
    return sim, explainer, tail.layer


def uses_fast_path(explainer) -> bool:
    return not explainer._plan()[1]  # the general path needs the autograd graph


def bypassed(setting) -> bool:
    sim, explainer, layer = setting
    return _hooks_the_tail_would_bypass(sim, explainer.blocks[0], layer)


MODULE_HOOKS = {
    "forward hook on the block": lambda s, b, layer: b.register_forward_hook(forward_hook),
    "forward pre-hook inside the block": lambda s, b, layer: b.q_proj.register_forward_pre_hook(pre_hook),
    "forward hook on the layer": lambda s, b, layer: layer.register_forward_hook(forward_hook),
    "forward hook above the layer": lambda s, b, layer: s.model.vision_model.encoder.register_forward_hook(
        forward_hook
    ),
    "forward pre-hook on the wrapper": lambda s, b, layer: s.register_forward_pre_hook(pre_hook),
    "full backward hook anywhere": lambda s, b, layer: s.model.text_projection.register_full_backward_hook(
        backward_hook
    ),
    "backward pre-hook anywhere": lambda s, b, layer: s.model.visual_projection.register_full_backward_pre_hook(
        backward_pre_hook
    ),
    "non-full backward hook anywhere": lambda s, b, layer: s.model.vision_model.post_layernorm.register_backward_hook(
        backward_hook
    ),
}

GLOBAL_HOOKS = {
    "global forward hook": lambda: module_hooks.register_module_forward_hook(forward_hook),
    "global forward pre-hook": lambda: module_hooks.register_module_forward_pre_hook(pre_hook),
    "global full backward hook": lambda: module_hooks.register_module_full_backward_hook(backward_hook),
    "global backward pre-hook": lambda: module_hooks.register_module_full_backward_pre_hook(backward_pre_hook),
}


def test_without_hooks_the_fast_path_runs(setting):
    assert not bypassed(setting) and uses_fast_path(setting[1])


@pytest.mark.parametrize("where", list(MODULE_HOOKS))
def test_a_module_hook_it_would_bypass_sends_it_to_the_general_path(setting, where):
    sim, explainer, layer = setting
    handle = MODULE_HOOKS[where](sim, explainer.blocks[0], layer)
    try:
        assert bypassed(setting) and not uses_fast_path(explainer)
    finally:
        handle.remove()
    assert uses_fast_path(explainer)


@pytest.mark.parametrize("which", list(GLOBAL_HOOKS))
def test_a_global_hook_sends_it_to_the_general_path_unless_it_is_the_packages_own(setting, which):
    handle = GLOBAL_HOOKS[which]()
    try:
        assert bypassed(setting) and not uses_fast_path(setting[1])
    finally:
        handle.remove()
    own = module_hooks.register_module_forward_hook(thread_owned(forward_hook))
    try:
        assert not bypassed(setting) and uses_fast_path(setting[1])
    finally:
        own.remove()


def test_hooks_on_what_the_fast_path_runs_itself_or_on_other_branches_do_not_count(setting):
    sim, explainer, layer = setting
    block = explainer.blocks[0]
    handles = [
        layer.mlp.register_forward_hook(forward_hook),  # in the layer, outside the block: the tail calls it
        sim.model.vision_model.encoder.layers[0].register_forward_hook(forward_hook),  # before the layer: it runs
        sim.model.text_model.register_forward_pre_hook(pre_hook),  # another tower
        block.register_forward_hook(thread_owned(forward_hook)),  # the package's own probe hook
    ]
    try:
        assert not bypassed(setting) and uses_fast_path(explainer)
    finally:
        for handle in handles:
            handle.remove()


def test_a_layer_outside_the_wrapper_checks_the_block_only(setting):
    sim, explainer, _ = setting
    block = explainer.blocks[0]
    stranger = nn.Linear(2, 2)
    stranger.register_forward_hook(forward_hook)
    assert not _hooks_the_tail_would_bypass(sim, block, stranger)
    handle = block.register_forward_hook(forward_hook)
    try:
        assert _hooks_the_tail_would_bypass(sim, block, stranger)
    finally:
        handle.remove()


def test_the_fast_path_applies_to_one_image_block_of_a_method_that_allows_it():
    clip = make_clip()
    sim = cg.ImageTextSimilarity(clip, text_embeds=torch.randn(2, 16))
    assert cg.GradECLIP(sim)._fast_path_applies()
    assert not cg.GradECLIP(sim, layers=2)._fast_path_applies()  # two blocks
    assert not cg.GradECLIP(cg.TextImageSimilarity(clip, image_embeds=torch.randn(2, 16)))._fast_path_applies()
    slow = general_path(sim)
    assert not slow._fast_path_applies() and not uses_fast_path(slow)
