"""Words a tokenizer does not know: named in a UserWarning, with what ShapesCLIP knows and the hub alternative."""

from __future__ import annotations

import warnings

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

import captum_gradeclip as cg
from captum_gradeclip.vocabulary import UNKNOWN_TOKENS, is_shapes_clip, unknown_words
from captum_gradeclip.zoo import shapes
from tests.conftest import UNDER_MUTMUT, make_clip


@pytest.fixture(scope="module")
def shapes_clip():
    return cg.zoo.load_shapes_clip()


def test_unknown_words_are_found_as_typed_once_each(shapes_clip):
    _, processor = shapes_clip
    assert unknown_words(["a Woman in a red circle", "a woman"], processor.tokenizer) == ["Woman", "in", "woman"]
    assert unknown_words(shapes.all_prompts(), processor.tokenizer) == []
    assert is_shapes_clip(processor.tokenizer)


def test_shapes_clip_warns_naming_the_words_its_world_and_the_hub(shapes_clip):
    model, processor = shapes_clip
    with pytest.warns(UserWarning) as caught:
        cg.ImageTextSimilarity(model, ["a woman", "a uniform", "a red flag"], processor=processor)
    (message,) = [str(w.message) for w in caught]
    assert "ShapesCLIP does not know the words 'woman', 'uniform', 'flag'" in message
    assert "knows only the shapes world" in message and "hf:openai/clip-vit-base-patch16" in message
    if not UNDER_MUTMUT:  # mutmut's trampolines add call frames, so a stack level points elsewhere there
        assert caught[0].filename == __file__, "the warning points at the caller's line"


def test_known_words_do_not_warn(shapes_clip):
    model, processor = shapes_clip
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cg.ImageTextSimilarity(model, ["a red circle", "a blue square and a green cross"], processor=processor)


def test_another_tokenizer_warns_without_the_shapes_world():
    from captum_gradeclip.cli.demo import tiny_random_clip

    model, tokenizer = tiny_random_clip(["a", "red", "circle"])
    with pytest.warns(UserWarning, match=r"the tokenizer does not know the words 'dog'") as caught:
        cg.ImageTextSimilarity(model, ["a red dog"], tokenizer=tokenizer)
    assert "ShapesCLIP" not in str(caught[0].message)


def test_softmax_over_one_text_warns_that_it_is_constant(shapes_clip):
    model, processor = shapes_clip
    with pytest.warns(UserWarning, match=r"score='softmax' over a single reference .*always 1"):
        sim = cg.ImageTextSimilarity(model, ["a red circle"], processor=processor, score="softmax")
    pixels = processor(images=shapes.make_scene(0).image, return_tensors="pt")["pixel_values"]
    assert float(sim(pixels).detach()) == pytest.approx(1.0), "the warning is true: p = 1"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cg.ImageTextSimilarity(model, ["a red circle", "a blue cross"], processor=processor, score="softmax")


def _oov_tokenizer():
    """A word-level tokenizer whose unknown token is spelt ``<oov>``: none of the usual spellings."""
    vocab = {"<s>": 0, "<pad>": 1, "<oov>": 2, "</s>": 3, "a": 4, "red": 5, "circle": 6}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<oov>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 3)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<oov>", pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )


def test_an_unknown_token_of_another_spelling_is_found_through_unk_token_id():
    tokenizer = _oov_tokenizer()
    assert tokenizer.unk_token_id == 2 and not set(UNKNOWN_TOKENS) & set(tokenizer.get_vocab())
    assert unknown_words(["a red dog", "a Cat circle"], tokenizer) == ["dog", "Cat"]
    with pytest.warns(UserWarning, match=r"the tokenizer does not know the words 'dog': it reads"):
        cg.ImageTextSimilarity(make_clip(0), ["a red dog", "a circle"], tokenizer=tokenizer)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cg.ImageTextSimilarity(make_clip(0), ["a red circle"], tokenizer=tokenizer)
