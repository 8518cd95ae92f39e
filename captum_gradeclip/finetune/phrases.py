"""Noun phrases of captions: a rule-based chunker for the shapes world and a hook for a real parser."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

#: A parser: caption in, its noun phrases out (e.g. a wrapper around spaCy's ``doc.noun_chunks``).
PhraseParser = Callable[[str], Sequence[str]]

_DETERMINERS = frozenset({"a", "an", "the", "one", "two", "three", "some", "this", "that"})
_SEPARATORS = frozenset({",", ";", "and", "or", "with", "next", "to", "beside", "near", "on", "in", "of", "above"})


def shapes_noun_phrases(caption: str) -> list[str]:
    """Splits a caption into noun phrases at separators and determiners.

    A phrase starts at a determiner (``"a"``, ``"the"``, ...) or after a separator
    (``","``, ``"and"``, ``"with"``, ...), and ends before the next one. This is exact
    for shapes-world captions (``"a red circle , a blue square and a green cross"``) and a
    reasonable guess for simple English lists; use a real parser for anything richer.

    Args:
        caption (str): the caption.

    Returns:
        *list[str]*: the phrases in order, each with its determiner, words joined by one space.

    Examples::

        >>> shapes_noun_phrases("a red circle , a blue square and a green cross")
        ['a red circle', 'a blue square', 'a green cross']
    """
    if not isinstance(caption, str):
        raise TypeError(f"`caption` must be a str; got {type(caption).__name__}")
    tokens = re.findall(r"[\w'-]+|[^\w\s]", caption)
    phrases: list[list[str]] = []
    current: list[str] = []
    for token in tokens:
        low = token.lower()
        if low in _SEPARATORS or not re.match(r"[\w'-]", token):
            if current:
                phrases.append(current)
            current = []
        elif low in _DETERMINERS and current and current[-1].lower() not in _DETERMINERS:
            phrases.append(current)
            current = [token]
        else:
            current.append(token)
    if current:
        phrases.append(current)
    return [" ".join(p) for p in phrases if any(w.lower() not in _DETERMINERS for w in p)]


def noun_phrases(caption: str, parser: PhraseParser | None = None) -> list[str]:
    """The noun phrases of ``caption``, from ``parser`` or the rule-based chunker.

    Args:
        caption (str): the caption.
        parser (callable, optional): ``parser(caption) -> sequence of phrases``, the hook for a
            real parser (spaCy, Stanza, ...). Default: :func:`shapes_noun_phrases`.

    Returns:
        *list[str]*: the non-empty, stripped phrases, in the parser's order.

    Examples::

        >>> noun_phrases("a red circle and a blue square")
        ['a red circle', 'a blue square']
        >>> noun_phrases("dog on grass", parser=lambda text: text.split(" on "))
        ['dog', 'grass']
    """
    if parser is None:
        return shapes_noun_phrases(caption)
    if not callable(parser):
        raise TypeError(f"`parser` must be callable; got {type(parser).__name__}")
    found = parser(caption)
    if isinstance(found, str) or not all(isinstance(p, str) for p in found):
        raise TypeError("`parser` must return a sequence of str")
    return [p.strip() for p in found if p.strip()]
