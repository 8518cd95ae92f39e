"""The noun-phrase chunker on every kind of shapes caption, and the parser hook."""

from __future__ import annotations

import pytest

from captum_gradeclip.finetune import noun_phrases, shapes_noun_phrases
from captum_gradeclip.zoo import shapes


def test_chunker_recovers_every_object_of_shapes_captions():
    scenes = shapes.make_scenes(range(300))
    assert {len(s.objects) for s in scenes} == {1, 2, 3}
    for i, scene in enumerate(scenes):
        assert shapes_noun_phrases(scene.caption) == scene.prompts
        absent = scene.absent_caption(i)
        assert len(shapes_noun_phrases(absent)) == len(scene.objects)


def test_chunker_on_plain_english_lists():
    assert shapes_noun_phrases("The big dog with a red ball") == ["The big dog", "a red ball"]
    assert shapes_noun_phrases("a cat a dog; the end.") == ["a cat", "a dog", "the end"]
    assert shapes_noun_phrases("and , a") == []


def test_parser_hook_replaces_the_chunker():
    calls = []

    def parser(text):
        calls.append(text)
        return [" dog ", "", "grass"]

    assert noun_phrases("a dog on grass", parser=parser) == ["dog", "grass"]
    assert calls == ["a dog on grass"]
    assert noun_phrases("a dog and a cat") == ["a dog", "a cat"]


def test_bad_inputs_name_the_argument():
    with pytest.raises(TypeError, match="`caption`"):
        shapes_noun_phrases(3)
    with pytest.raises(TypeError, match="`parser` must be callable"):
        noun_phrases("a dog", parser="spacy")
    with pytest.raises(TypeError, match="`parser` must return"):
        noun_phrases("a dog", parser=lambda t: t)
