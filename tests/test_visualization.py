"""to_hwc and words."""

from __future__ import annotations

import pkgutil

import pytest
import torch

import captum_gradeclip as cg


def test_to_hwc_shapes_and_upsampling():
    grid = torch.arange(6.0).reshape(1, 1, 2, 3)
    assert cg.to_hwc(grid).shape == (2, 3, 1)
    assert (cg.to_hwc(grid)[..., 0] == grid[0, 0].numpy()).all()
    up = cg.to_hwc(grid[0], size=(4, 6), interpolate_mode="nearest")
    assert up.shape == (4, 6, 1)
    assert up[0, 0, 0] == 0 and up[3, 5, 0] == 5 and up[1, 1, 0] == 0 and up[2, 2, 0] == 4
    with pytest.raises(ValueError, match="`attr` must hold exactly one 2-D map"):
        cg.to_hwc(torch.zeros(2, 1, 2, 3))


def test_words_merges_clip_bpe_pieces_by_sum():
    tokens = ["<|startoftext|>", "hot</w>", "dog", "gy</w>", "s</w>", "<|endoftext|>"]
    merged = cg.words(tokens, torch.tensor([9.0, 1.0, 2.0, 0.25, 0.5, 9.0]))
    assert merged == [("hot", 1.0), ("doggy", 2.25), ("s", 0.5)]


def test_words_wordpiece_sentencepiece_and_whole_words():
    assert cg.words(["[CLS]", "play", "##ing", "ball", "[SEP]"], [0, 1, 2, 3, 0]) == [("playing", 3.0), ("ball", 3.0)]
    assert cg.words(["▁red", "dish", "▁cat"], [1, 1, 1]) == [("reddish", 2.0), ("cat", 1.0)]
    whole = cg.words(["<s>", "a", "red", "circle", "</s>"], [0, 1, 2, 3, 0])
    assert whole == [("a", 1.0), ("red", 2.0), ("circle", 3.0)]
    assert cg.words(["<s>", "a"], [5, 1], drop_special=False) == [("<s>", 5.0), ("a", 1.0)]
    with pytest.raises(ValueError, match="`scores` must have one entry per token"):
        cg.words(["a", "b"], [1.0])


def test_words_keep_unknown_tokens_and_show_them_as_typed():
    tokens, scores = ["<s>", "a", "<unk>", "<unk>", "red", "</s>", "<pad>"], [9, 0.1, 0.2, 0.3, 0.4, 9, 9]
    assert cg.words(tokens, scores) == [("a", 0.1), ("<unk>", 0.2), ("<unk>", 0.3), ("red", 0.4)]
    typed = cg.words(tokens, scores, text="a woman in red")
    assert typed == [("a", 0.1), ("woman", 0.2), ("in", 0.3), ("red", 0.4)]
    # WordPiece's [UNK], at the end of the text
    assert cg.words(["[CLS]", "red", "[UNK]", "[SEP]"], [0, 1.0, 2.0, 0], text="red zebra") == [
        ("red", 1.0),
        ("zebra", 2.0),
    ]
    # more typed words than unknown tokens: the first one shows them all, nothing is lost
    assert cg.words(["<s>", "<unk>", "red", "</s>"], [0, 1.0, 2.0, 0], text="very dark red") == [
        ("very dark", 1.0),
        ("red", 2.0),
    ]


def test_the_former_shim_is_gone_and_the_names_have_one_home():
    from captum_gradeclip import viz, vocabulary

    assert cg.to_hwc is viz.to_hwc and cg.words is vocabulary.words
    assert "visualization" not in {info.name for info in pkgutil.iter_modules(cg.__path__)}
