"""The text wrappers' data checks at their edges: each bad input gets its own error naming the argument, each
good input at the edge passes, and a warning is given once per cut text (the mutation run's survivors)."""

from __future__ import annotations

import warnings

import pytest
import torch

import captum_gradeclip as cg
from captum_gradeclip.wrappers import _warn_cut, deferred_checks, require
from tests.conftest import BOS, EOS, PAD, UNDER_MUTMUT, VOCAB, random_texts

CONTEXT = 16  # the tiny CLIP's max_position_embeddings


@pytest.fixture
def sim(clip):
    return cg.TextImageSimilarity(clip, image_embeds=torch.randn(2, 16))


def text(length: int, eos: bool = True) -> torch.Tensor:
    """One text of ``length`` tokens: BOS, words, EOS (or a word in its place)."""
    ids = torch.full((1, length), 7)
    ids[0, 0] = BOS
    if eos:
        ids[0, -1] = EOS
    return ids


def test_non_integer_ids_are_refused_naming_their_type(sim):
    for bad, shown in [(text(4).to(torch.complex64), "complex64"), ([[0, 7, 3]], "list")]:
        with pytest.raises(TypeError, match=rf"^`input_ids` must be an integer tensor; got .*{shown}"):
            sim(bad)
    with pytest.raises(TypeError, match=r"^`input_ids` must be an integer tensor; got dtype torch.bool$"):
        sim(text(4).bool())


def test_shape_and_emptiness_are_checked_on_both_axes(sim):
    with pytest.raises(ValueError, match=r"^`input_ids` must have shape \(N, L\); got \(1, 1, 4\)$"):
        sim(text(4)[None])
    for shape in [(0, 4), (2, 0)]:
        with pytest.raises(ValueError, match=rf"^`input_ids` is empty: shape \({shape[0]}, {shape[1]}\)$"):
            sim(torch.zeros(shape, dtype=torch.long))


def test_ids_must_lie_in_the_vocabulary_and_the_error_names_the_first_outside(sim):
    assert sim(torch.tensor([[0, VOCAB - 1, EOS]])).shape == (1, 2)  # the last id is inside
    for bad in (VOCAB, -1):
        ids = torch.tensor([[0, 7, bad, EOS]])
        with pytest.raises(ValueError, match=rf"^`input_ids` holds ids outside the vocabulary \[0, {VOCAB}\): {bad}$"):
            sim(ids)


def test_a_text_of_exactly_the_context_length_is_not_overlong(sim):
    assert sim(text(CONTEXT)).shape == (1, 2)
    with pytest.raises(
        ValueError,
        match=rf"^`input_ids` has {CONTEXT + 1} tokens; the model's text context is {CONTEXT} "
        r"\(cut longer texts: truncation=True\)$",  # what to do, spelt as the tokenizer's argument
    ):
        sim(text(CONTEXT + 1))


def test_the_attention_mask_must_match_and_mark_at_least_two_tokens(sim):
    ids, mask = random_texts(2, 6)
    with pytest.raises(ValueError, match=r"^`attention_mask` must have the shape of `input_ids` \(2, 6\); got "):
        sim(ids, mask[:, :5])
    with pytest.raises(ValueError, match=r"^`attention_mask` must have the shape of `input_ids` \(2, 6\); got .*list"):
        sim(ids, mask.tolist())
    two = torch.tensor([[BOS, EOS, PAD]]), torch.tensor([[1, 1, 0]])
    assert sim(*two).shape == (1, 2)  # two tokens: BOS and EOS, the shortest text
    with pytest.raises(ValueError, match=r"^`attention_mask` marks a text with fewer than 2 tokens \(an empty text\)$"):
        sim(two[0], torch.tensor([[1, 0, 0]]))


def test_without_a_mask_a_single_token_is_an_empty_text(sim):
    assert sim(torch.tensor([[BOS, EOS]])).shape == (1, 2)
    with pytest.raises(ValueError, match=r"^`input_ids` holds an empty text: fewer than 2 tokens$"):
        sim(torch.tensor([[EOS]]))


def test_texts_without_an_end_token_warn_naming_the_rows(sim):
    ids = torch.cat([text(5), text(5, eos=False), text(5, eos=False)])
    with pytest.warns(UserWarning) as caught:
        sim(ids)
    assert [str(w.message) for w in caught] == [
        f"`input_ids` row(s) [1, 2] hold no end-of-text token (id {EOS}): the model pools at position 0, so their "
        "scores and explanations mean little (padding only, or cut without an end token?)"
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sim(text(5))  # every text ends: silence


def test_an_end_token_id_only_in_the_padding_still_warns(sim):
    # cut before its end token, padded with the end token's id (CLIP's tokenizers pad with it): the mask says no EOS
    ids = torch.tensor([[BOS, 7, 8, EOS, EOS]])
    with pytest.warns(UserWarning, match=r"row\(s\) \[0\] hold no end-of-text token"):
        sim(ids, torch.tensor([[1, 1, 1, 0, 0]]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sim(ids, torch.tensor([[1, 1, 1, 1, 0]]))  # the first EOS is attended: it ends


def test_warn_cut_warns_only_for_texts_longer_than_the_context():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _warn_cut("texts", [3, 4, 5, 4], 4)
    assert [str(w.message) for w in caught] == [
        "`texts`: text 2 has 5 tokens; the model reads the first 4 (the rest is cut)"
    ]


def test_require_raises_or_warns_its_message_and_builds_it_only_on_failure():
    built = []

    def message() -> str:
        built.append(1)
        return "built message"

    require(torch.tensor(True), message)
    assert built == []
    with pytest.raises(ValueError, match=r"^built message$"):
        require(torch.tensor(False), message)
    with pytest.warns(UserWarning, match=r"^plain$"):
        require(torch.tensor(False), "plain", warn=True)
    with deferred_checks():  # a CPU check is read at once, also inside the deferred block
        with pytest.raises(ValueError, match=r"^now$"):
            require(torch.tensor(False), "now")


def test_a_cut_text_warns_at_the_users_line(clip):
    from tests.test_wrappers import _word_tokenizer

    long = " ".join(["a red circle"] * 6)  # 18 words + start and end: 20 tokens for a context of 16
    with pytest.warns(UserWarning, match=r"^`texts`: text 1 has 20 tokens; the model reads the first 16") as caught:
        cg.ImageTextSimilarity(clip, ["a red circle", long], tokenizer=_word_tokenizer())
    if not UNDER_MUTMUT:  # mutmut's trampolines add call frames, so a stack level points elsewhere there
        assert [w.filename for w in caught] == [__file__]
