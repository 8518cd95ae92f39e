"""Which words CLIP relies on: Grad-ECLIP word importances over a corpus, per word and per word class."""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from captum_gradeclip.adapters import get_adapter
from captum_gradeclip.adapters.processing import HFProcessing, Processing, ProcessingRole
from captum_gradeclip.attr import GradECLIP
from captum_gradeclip.vocabulary import words as merge_words
from captum_gradeclip.wrappers import TextImageSimilarity
from captum_gradeclip.zoo import shapes

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes

#: A tagger: the words of one caption in, one tag (part of speech or word class) per word out.
Tagger = Callable[[Sequence[str]], Sequence[str]]

_FUNCTION_WORDS = {
    "determiner": {"a", "an", "the", "this", "that", "these", "those", "some", "one"},
    "conjunction": {"and", "or", "but", "nor"},
    "preposition": {"on", "in", "of", "with", "to", "at", "by", "near", "next", "above", "below", "beside"},
}
NORMALIZATIONS = ("sum", "max", None)
COLUMNS = ("level", "key", "count", "mean", "std", "total")


def simple_tagger(words: Sequence[str]) -> list[str]:
    """Word classes from closed lists: the shapes world's colours and shapes, English function words.

    Tags: ``"colour"``, ``"shape"`` (the shapes world's classes, exact there), ``"determiner"``,
    ``"conjunction"``, ``"preposition"``, ``"punctuation"``, and ``"other"`` for everything else.
    Pass your own tagger (e.g. around spaCy's ``token.pos_``) for real captions.

    Args:
        words (sequence of str): the words of one caption.

    Returns:
        *list[str]*: one tag per word.

    Examples::

        >>> simple_tagger(["a", "red", "circle", "and", "a", "dog"])
        ['determiner', 'colour', 'shape', 'conjunction', 'determiner', 'other']
    """
    tags = []
    for word in words:
        low = word.lower()
        if low in shapes.COLOURS:
            tags.append("colour")
        elif low in shapes.SHAPES:
            tags.append("shape")
        elif not any(ch.isalnum() for ch in low):
            tags.append("punctuation")
        else:
            tags.append(next((tag for tag, group in _FUNCTION_WORDS.items() if low in group), "other"))
    return tags


def word_importances(
    model: nn.Module,
    processor: Any,  # the loader's own processor
    images: Tensor | Sequence[object],
    captions: Sequence[str],
    *,
    normalize: str | None = "sum",
    batch_size: int = 64,
    mode: str = "native",
) -> list[list[tuple[str, float]]]:
    """Grad-ECLIP text-side importance of every word of each caption, for its own image.

    Args:
        model (nn.Module): a CLIP model with an adapter.
        processor (object): its processor: ``processor(images=..., return_tensors="pt")`` and a
            ``tokenizer`` with ``convert_ids_to_tokens``.
        images (Tensor or sequence of images): ``(N, C, H, W)`` pixel values, or N images for the processor.
        captions (sequence of str): N captions, caption ``i`` explained against image ``i``.
        normalize (str or None, optional): ``"sum"`` (default) divides each caption's scores by their
            sum, so words compete for a share; ``"max"`` by their maximum; ``None`` keeps raw scores.
        batch_size (int, optional): captions per Grad-ECLIP call. Default: 64.
        mode (str, optional): Grad-ECLIP's mode. Default: ``"native"``.

    Returns:
        *list[list[tuple[str, float]]]*: per caption, ``(word, importance)`` in order (BPE pieces merged,
        special tokens dropped).

    Examples::

        >>> records = word_importances(model, processor, [scene.image], [scene.caption])
        >>> scene.caption
        'a green triangle , a yellow square and a red square'
        >>> [(word, round(score, 2)) for word, score in records[0][:6]]
        [('a', 0.01), ('green', 0.0), ('triangle', 0.0), (',', 0.01), ('a', 0.04), ('yellow', 0.59)]
    """
    if isinstance(captions, str) or not all(isinstance(c, str) for c in captions):
        raise TypeError("`captions` must be a sequence of str")
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"`normalize` must be one of {NORMALIZATIONS}; got {normalize!r}")
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be positive; got {batch_size}")
    pixels: Tensor = (
        images if isinstance(images, Tensor) else processor(images=list(images), return_tensors="pt")["pixel_values"]
    )
    if len(pixels) != len(captions):
        raise ValueError(f"`images` and `captions` must pair up; got {len(pixels)} images and {len(captions)} captions")
    processing = _processing(model, processor)
    device = next(model.parameters()).device
    records: list[list[tuple[str, float]]] = []
    for start in range(0, len(captions), batch_size):
        chunk = list(captions[start : start + batch_size])
        ids, mask = processing.tokenize(chunk)  # the loader's own tokenising (SigLIP: padded to its context)
        ids, mask = ids.to(device), mask.to(device)
        sim = TextImageSimilarity(model, images=pixels[start : start + batch_size].to(device))
        scores = GradECLIP(sim, mode=mode).attribute(
            ids, target=list(range(len(chunk))), additional_forward_args=(mask,)
        )
        for row, row_ids in zip(scores.cpu(), ids.cpu(), strict=True):
            merged = merge_words(processing.tokens(row_ids), row)
            denom = 1.0
            if normalize == "sum":
                denom = sum(v for _, v in merged)
            elif normalize == "max":
                denom = max((v for _, v in merged), default=0.0)
            denom = denom if denom > 0 else 1.0
            records.append([(w, v / denom) for w, v in merged])
    return records


def _processing(model: nn.Module, processor: object) -> Processing:
    """The model's adapter's processing role with ``processor``; a plain transformers processor otherwise."""
    adapter = get_adapter(model)
    if isinstance(adapter, ProcessingRole):
        return adapter.processing(processor)
    return HFProcessing(processor)


def _stats(values: list[float]) -> dict[str, float]:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return {"count": n, "mean": mean, "std": std, "total": sum(values)}


@dataclass
class ImportanceTable:
    """Word importances aggregated per word and per tag. Plain dicts, no pandas.

    Attributes:
        by_word (dict): ``word -> {"tag", "count", "mean", "std", "total"}`` (the word's most common tag).
        by_tag (dict): ``tag -> {"count", "mean", "std", "total"}``.
        records (list): the per-caption ``(word, importance, tag)`` triples it was built from.

    Examples::

        >>> table = aggregate([[("a", 0.1), ("red", 0.5), ("circle", 0.4)], [("a", 0.3), ("red", 0.7)]])
        >>> table.by_word["red"]["count"], table.by_word["red"]["mean"]
        (2, 0.6)
        >>> table.rows()[0]["level"], table.rows()[0]["key"]
        ('tag', 'colour')
        >>> table.to_csv(tmp_path / "words.csv").read_text().splitlines()[0]
        'level,key,tag,count,mean,std,total'
    """

    by_word: dict[str, dict] = field(default_factory=dict)
    by_tag: dict[str, dict] = field(default_factory=dict)
    records: list[list[tuple[str, float, str]]] = field(default_factory=list, repr=False)

    def rows(self) -> list[dict]:
        """One dict per word and per tag, with the keys of :data:`COLUMNS` (words carry ``tag`` too)."""
        out = [{"level": "tag", "key": k, **v} for k, v in sorted(self.by_tag.items())]
        out += [{"level": "word", "key": k, **v} for k, v in sorted(self.by_word.items())]
        return out

    def to_csv(self, path: str | Path) -> Path:
        """Writes :meth:`rows` as CSV (columns ``level,key,tag,count,mean,std,total``) and returns the path."""
        path = Path(path)
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=[*COLUMNS[:2], "tag", *COLUMNS[2:]])
            writer.writeheader()
            writer.writerows(self.rows())
        return path

    def plot(self, level: str = "tag", ax: Axes | None = None, top: int = 20) -> Axes:
        """A matplotlib bar plot of the mean importance, with the standard deviation as error bars.

        Args:
            level (str, optional): ``"tag"`` (default) or ``"word"``.
            ax (matplotlib Axes, optional): where to draw. Default: a new figure.
            top (int, optional): at most this many bars, highest mean first. Default: 20.

        Returns:
            *matplotlib.axes.Axes*.
        """
        if level not in ("tag", "word"):
            raise ValueError(f"`level` must be 'tag' or 'word'; got {level!r}")
        table = self.by_tag if level == "tag" else self.by_word
        items = sorted(table.items(), key=lambda kv: -kv[1]["mean"])[:top]
        if ax is None:
            import matplotlib.pyplot as plt

            _, ax = plt.subplots(figsize=(max(4.0, 0.5 * len(items) + 1), 3.5))
        keys = [k for k, _ in items]
        ax.bar(keys, [v["mean"] for _, v in items], yerr=[v["std"] for _, v in items], color="tab:blue", capsize=3)
        ax.set_ylabel("mean importance")
        ax.set_title(f"Grad-ECLIP word importance per {level}")
        ax.tick_params(axis="x", labelrotation=45)
        return ax


def aggregate(
    records: Sequence[Sequence[tuple[str, float]]],
    tagger: Tagger | None = None,
    tags: Sequence[Sequence[str]] | None = None,
) -> ImportanceTable:
    """Aggregates per-caption word importances per word and per tag.

    Args:
        records (sequence): per caption, ``(word, importance)`` pairs (as :func:`word_importances` returns).
        tagger (callable, optional): the tagger hook, ``tagger(words) -> tags``. Default: :func:`simple_tagger`.
        tags (sequence of sequences of str, optional): explicit tags, one list per caption, one tag per
            word; they take precedence over ``tagger`` (e.g. "present"/"absent" object words).

    Returns:
        *ImportanceTable*.

    Examples::

        >>> table = aggregate([[("a", 0.1), ("red", 0.5), ("circle", 0.4)]])
        >>> table.by_tag["colour"]["mean"]
        0.5
    """
    tagger = simple_tagger if tagger is None else tagger
    if not callable(tagger):
        raise TypeError(f"`tagger` must be callable; got {type(tagger).__name__}")
    if tags is not None and len(tags) != len(records):
        raise ValueError(f"`tags` must hold one list per caption ({len(records)}); got {len(tags)}")
    per_word: dict[str, list[float]] = {}
    word_tags: dict[str, dict[str, int]] = {}
    per_tag: dict[str, list[float]] = {}
    tagged_records = []
    for i, record in enumerate(records):
        words = [w for w, _ in record]
        row_tags = list(tags[i]) if tags is not None else list(tagger(words))
        if len(row_tags) != len(words):
            raise ValueError(f"caption {i}: {len(words)} words but {len(row_tags)} tags")
        tagged_records.append([(w, float(v), t) for (w, v), t in zip(record, row_tags, strict=True)])
        for (word, value), tag in zip(record, row_tags, strict=True):
            per_word.setdefault(word, []).append(float(value))
            per_tag.setdefault(tag, []).append(float(value))
            counts = word_tags.setdefault(word, {})
            counts[tag] = counts.get(tag, 0) + 1
    by_word = {w: {"tag": max(word_tags[w], key=word_tags[w].__getitem__), **_stats(v)} for w, v in per_word.items()}
    by_tag = {t: _stats(v) for t, v in per_tag.items()}
    return ImportanceTable(by_word, by_tag, tagged_records)


def analyze_words(
    model: nn.Module,
    processor: Any,  # the loader's own processor
    images: Tensor | Sequence[object],
    captions: Sequence[str],
    *,
    tagger: Tagger | None = None,
    tags: Sequence[Sequence[str]] | None = None,
    normalize: str | None = "sum",
    batch_size: int = 64,
) -> ImportanceTable:
    """:func:`word_importances` over a corpus, then :func:`aggregate`.

    Args:
        model, processor, images, captions: as for :func:`word_importances`.
        tagger, tags: as for :func:`aggregate`.
        normalize, batch_size: as for :func:`word_importances`.

    Returns:
        *ImportanceTable*: ``.by_word``, ``.by_tag``, ``.to_csv(path)``, ``.plot()``.

    Examples::

        >>> scenes = shapes.make_scenes(range(20))
        >>> table = analyze_words(model, processor, [s.image for s in scenes], [s.caption for s in scenes])
        >>> table.by_tag["colour"]["mean"] > table.by_tag["determiner"]["mean"]
        True
        >>> path = table.to_csv(tmp_path / "words.csv")
        >>> table.plot("tag").figure.savefig(tmp_path / "words.png")
    """
    with torch.no_grad():
        records = word_importances(model, processor, images, captions, normalize=normalize, batch_size=batch_size)
    return aggregate(records, tagger=tagger, tags=tags)
