"""Corpus analyses with Grad-ECLIP: which words CLIP relies on, per word and per word class.

- :func:`word_importances`: per caption, the Grad-ECLIP importance of each word for its image;
- :func:`aggregate`: per word and per tag (a tagger hook; :func:`simple_tagger` knows the shapes world);
- :func:`analyze_words`: both in one call, returning an :class:`ImportanceTable` (dicts, CSV, bar plot).
"""

from captum_gradeclip.analysis.words import (
    ImportanceTable,
    Tagger,
    aggregate,
    analyze_words,
    simple_tagger,
    word_importances,
)

__all__ = ["ImportanceTable", "Tagger", "aggregate", "analyze_words", "simple_tagger", "word_importances"]
