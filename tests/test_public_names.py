"""The package's top level shows its public API and nothing else."""

from __future__ import annotations

import captum_gradeclip as cg


def test_dir_lists_exactly_the_public_names():
    names = dir(cg)
    assert names == sorted(cg.__all__)
    for private in ("Any", "TYPE_CHECKING", "importlib", "annotations"):
        assert private not in names


def test_every_public_name_resolves():
    for name in cg.__all__:
        assert getattr(cg, name) is not None, name


def test_the_wrappers_constructors_have_their_own_docstrings_not_torchs():
    import inspect

    for wrapper in (cg.ImageTextSimilarity, cg.TextImageSimilarity, cg.ImageClassification, cg.SimilarityWrapper):
        doc = inspect.getdoc(wrapper.__init__) or ""
        assert "Initialize internal Module state" not in doc and "model" in doc, wrapper.__name__
