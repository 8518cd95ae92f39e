"""Inputs whose result would be meaningless warn; inputs torch would fail on deep inside are refused by name."""

from __future__ import annotations

import warnings

import pytest
import torch

import captum_gradeclip as cg
from tests.conftest import EOS, PAD, VOCAB, general_path, random_texts
from tests.test_wrappers import _word_tokenizer


def test_texts_longer_than_the_context_are_cut_with_a_warning(clip):
    long_text = " ".join(["a red circle"] * 7)  # 21 words + start and end: 23 tokens, the context is 16
    with pytest.warns(UserWarning, match=r"text 0 has 23 tokens; the model reads the first 16") as record:
        sim = cg.ImageTextSimilarity(clip, [long_text, "a circle"], tokenizer=_word_tokenizer())
    assert len(record) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        short = cg.ImageTextSimilarity(clip, ["a red circle " * 4 + "a", "a circle"], tokenizer=_word_tokenizer())
    assert sim.num_references == short.num_references == 2
    ids, mask = random_texts(1, 20)
    tsim = cg.TextImageSimilarity(clip, image_embeds=torch.randn(1, 16))
    with pytest.raises(ValueError, match=r"`input_ids` has 20 tokens; the model's text context is 16"):
        tsim(ids, mask)


def test_texts_without_an_end_token_or_of_padding_only_warn(clip):
    ids, mask = random_texts(2, 6)
    no_eos = ids.masked_fill(ids == EOS, 4)
    with pytest.warns(UserWarning, match=r"`input_ids` row\(s\) \[0, 1\] hold no end-of-text token \(id 3\)"):
        cg.ImageTextSimilarity(clip, {"input_ids": no_eos, "attention_mask": mask})
    padding = torch.full((1, 6), PAD)
    tsim = cg.TextImageSimilarity(clip, image_embeds=torch.randn(1, 16))
    with pytest.warns(UserWarning, match=r"row\(s\) \[0\] hold no end-of-text token"):
        cg.GradECLIP(tsim).attribute(padding, target=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cg.GradECLIP(tsim).attribute(ids, target=0, additional_forward_args=(mask,))  # well-formed: silent


def test_all_zero_reference_embeddings_warn(clip):
    embeds = torch.randn(3, 16)
    embeds[1] = 0
    with pytest.warns(UserWarning, match=r"`text_embeds` row\(s\) \[1\] are all zeros: their scores and maps are 0"):
        cg.ImageTextSimilarity(clip, text_embeds=embeds)
    with pytest.warns(UserWarning, match=r"`image_embeds` row\(s\) \[0\] are all zeros"):
        cg.TextImageSimilarity(clip, image_embeds=torch.zeros(1, 16))


def test_non_finite_maps_warn(clip):
    sim = cg.ImageTextSimilarity(clip, text_embeds=torch.randn(2, 16))
    pixels = torch.randn(1, 3, 32, 32)
    with pytest.warns(UserWarning, match=r"the maps hold NaN or infinite values"):
        maps = cg.GradECLIP(sim).attribute(pixels * 1e30, target=0)
    assert not torch.isfinite(maps).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.isfinite(cg.GradECLIP(sim).attribute(pixels, target=0)).all()


def test_train_mode_warns_and_stays(clip):
    sim = cg.ImageTextSimilarity(clip, text_embeds=torch.randn(2, 16))
    clip.train()
    with pytest.warns(UserWarning, match=r"in train mode.*model.eval\(\)"):
        cg.GradECLIP(sim).attribute(torch.randn(1, 3, 32, 32), target=0)
    assert all(m.training for m in clip.modules())  # left as it was


@pytest.mark.parametrize("modality", ["image", "image-layer", "text"])
def test_user_hooks_on_the_explained_block_are_honoured(clip, modality):
    if modality.startswith("image"):
        sim = cg.ImageTextSimilarity(clip, text_embeds=torch.randn(2, 16))
        inputs, extra = torch.randn(2, 3, 32, 32), None
    else:
        sim = cg.TextImageSimilarity(clip, image_embeds=torch.randn(2, 16))
        ids, mask = random_texts(2, 6)
        inputs, extra = ids, (mask,)
    block = sim.explained_blocks()[-1]
    if modality == "image-layer":  # the residual layer that holds the block, which the fast path stops at
        block = clip.vision_model.encoder.layers[-1]
    plain = cg.GradECLIP(sim).attribute(inputs, target=0, additional_forward_args=extra)

    def rescale(_module, _args, output):  # a user's hook that changes the block's output
        return (output[0] * -3.0 + 0.5, *output[1:]) if isinstance(output, tuple) else output * -3.0 + 0.5

    handle = block.register_forward_hook(rescale)
    try:
        fast = cg.GradECLIP(sim).attribute(inputs, target=0, additional_forward_args=extra)
        general = general_path(sim).attribute(inputs, target=0, additional_forward_args=extra)
    finally:
        handle.remove()
    torch.testing.assert_close(fast, general)
    assert not torch.allclose(fast, plain)  # the hook does change the explanation


def test_torch_errors_become_errors_naming_the_argument(clip):
    sim = cg.ImageTextSimilarity(clip, text_embeds=torch.randn(2, 16))
    for target in (10**20, -(10**20), [0, 10**20]):
        with pytest.raises(ValueError, match=r"`target` must index the wrapper's 2 output columns"):
            cg.GradECLIP(sim).attribute(torch.randn(2, 3, 32, 32), target=target)
    with pytest.raises(TypeError, match=r"`text_embeds` must be a floating-point tensor; got .*torch.int64"):
        cg.ImageTextSimilarity(clip, text_embeds=torch.ones(2, 16, dtype=torch.long))
    ids, mask = random_texts(2, 6)
    beyond = ids.clone()
    beyond[1, 2] = VOCAB + 5
    tsim = cg.TextImageSimilarity(clip, image_embeds=torch.randn(2, 16))
    with pytest.raises(ValueError, match=rf"`input_ids` holds ids outside the vocabulary \[0, {VOCAB}\): {VOCAB + 5}"):
        cg.GradECLIP(tsim).attribute(beyond, target=0, additional_forward_args=(mask,))
    beyond[1, 2] = -1
    with pytest.raises(ValueError, match=r"`input_ids` holds ids outside the vocabulary .*: -1"):
        cg.ImageTextSimilarity(clip, {"input_ids": beyond, "attention_mask": mask})
