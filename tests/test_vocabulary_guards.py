"""Unknown-word detection at its edges: the unknown token found by its id or by its usual spellings, each word
once as typed, and no warning (nor a crash) from tokenizers that cannot say (the mutation run's survivors)."""

from __future__ import annotations

import warnings

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from captum_gradeclip.vocabulary import unknown_words, warn_unknown_words
from tests.conftest import UNDER_MUTMUT


def word_tokenizer(unk: str = "<oov>") -> PreTrainedTokenizerFast:
    """A word-level tokenizer whose unknown token is spelt ``unk``, with start and end tokens (empty offsets)."""
    vocab = {"<s>": 0, "</s>": 1, unk: 2, "a": 3, "red": 4, "circle": 5}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=unk))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token=unk, bos_token="<s>", eos_token="</s>")


class Fake:
    """A callable tokenizer: ``vocab`` from ``get_vocab``, every word read as ``ids[word]``, offsets as typed."""

    def __init__(self, vocab: dict[str, int], fails: type[Exception] | None = None) -> None:
        self.vocab, self.fails, self.calls = vocab, fails, 0

    def get_vocab(self) -> dict[str, int]:
        return self.vocab

    def __call__(self, texts: list[str], return_offsets_mapping: bool = False) -> dict:
        self.calls += 1
        if self.fails is not None:
            raise self.fails("no offsets")
        ids, offsets = [], []
        for text in texts:
            spans = [(i, i + len(w)) for i, w in zip(_starts(text), text.split(), strict=True)]
            ids.append([self.vocab.get(text[s:e], 99) for s, e in spans])
            offsets.append(spans)
        return {"input_ids": ids, "offset_mapping": offsets}


def _starts(text: str) -> list[int]:
    out, at = [], 0
    for word in text.split():
        at = text.index(word, at)
        out.append(at)
        at += len(word)
    return out


def test_an_unknown_token_spelt_otherwise_is_found_through_its_id():
    tokenizer = word_tokenizer("<oov>")
    assert unknown_words(["a blue circle", "Blue square a blue"], tokenizer) == ["blue", "Blue", "square"]
    assert unknown_words(["a red circle"], tokenizer) == []


@pytest.mark.parametrize("unk", ["<unk>", "[UNK]", "<|unk|>"])
def test_the_usual_spellings_are_found_in_the_vocabulary_without_an_unk_token_id(unk):
    fake = Fake({unk: 99, "a": 1})  # every word outside the dict reads as 99: the unknown token's id
    assert unknown_words(["a dog and a cat"], fake) == ["dog", "and", "cat"]


def test_a_tokenizer_without_a_vocabulary_is_read_through_its_unk_token_id():
    class NoVocabulary(Fake):  # callable with offsets and an unknown token's id, but no get_vocab
        unk_token_id = 99
        get_vocab = property()  # reading it raises AttributeError, as if absent

    tokenizer = NoVocabulary({"a": 1})
    assert not hasattr(tokenizer, "get_vocab")
    assert unknown_words(["a dog and a cat"], tokenizer) == ["dog", "and", "cat"]


def test_tokenizers_that_cannot_say_give_no_words_and_no_error():
    no_unknown = Fake({"a": 1})
    assert unknown_words(["a dog"], no_unknown) == [] and no_unknown.calls == 0  # nothing to look for: not run
    for error in (NotImplementedError, TypeError, ValueError):  # a slow tokenizer has no offsets
        assert unknown_words(["a dog"], Fake({"<unk>": 99}, fails=error)) == []
    with pytest.raises(KeyError):  # any other failure is not hidden
        unknown_words(["a dog"], Fake({"<unk>": 99}, fails=KeyError))
    assert unknown_words(["a dog"], object()) == []  # not a tokenizer at all
    assert unknown_words(["a dog"], None) == []


def test_the_warning_names_the_words_and_points_at_the_caller():
    tokenizer = word_tokenizer()

    def api(texts):
        return warn_unknown_words(texts, tokenizer)  # the default stacklevel: the caller of the API

    with pytest.warns(UserWarning, match=r"^the tokenizer does not know the words 'dog', 'cat': it reads") as caught:
        assert api(["a dog", "a cat dog"]) == ["dog", "cat"]
    assert len(caught) == 1
    if not UNDER_MUTMUT:  # mutmut's trampolines add call frames, so a stack level points elsewhere there
        assert caught[0].filename == __file__
        assert caught[0].lineno == test_the_warning_names_the_words_and_points_at_the_caller.__code__.co_firstlineno + 7
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert warn_unknown_words(["a red circle"], tokenizer) == []
