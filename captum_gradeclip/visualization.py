"""Helpers that hand our outputs to Captum's visualizers."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np
import torch
from captum.attr import LayerAttribution
from torch import Tensor

_SPECIAL = re.compile(r"^(<\|.*\|>|\[[A-Z]+\]|</?s>|<pad>|<unk>|<bos>|<eos>)$")
_UNKNOWN = ("<unk>", "[UNK]", "<|unk|>")


def to_hwc(attr: Tensor, size: tuple[int, int] | None = None, interpolate_mode: str = "bilinear") -> np.ndarray:
    """Prepares one map for :func:`captum.attr.visualization.visualize_image_attr`.

    Args:
        attr (Tensor): one map of shape ``(h, w)``, ``(1, h, w)`` or ``(1, 1, h, w)``.
        size (tuple[int, int], optional): ``(H, W)`` to upsample to, through
            :meth:`captum.attr.LayerAttribution.interpolate`; use the image's size
            for blended heat maps. Default: keep the grid size.
        interpolate_mode (str, optional): mode for upsampling. Default: ``"bilinear"``.

    Returns:
        *numpy.ndarray* of shape ``(H, W, 1)`` (Captum 0.8 requires the channel axis).

    Examples::

        >>> from captum.attr import visualization as viz
        >>> fig, ax = viz.visualize_image_attr(
        ...     to_hwc(maps[0], size=image.shape[:2]), image, "blended_heat_map", use_pyplot=False)
    """
    if not isinstance(attr, Tensor):
        attr = torch.as_tensor(attr)
    single = attr.reshape(attr.shape[-2:]) if attr.dim() >= 2 and attr[..., 0, 0].numel() == 1 else None
    if single is None:
        raise ValueError(f"`attr` must hold exactly one 2-D map; got shape {tuple(attr.shape)}")
    grid = single.detach().float().cpu()[None, None]
    if size is not None:
        grid = LayerAttribution.interpolate(grid, tuple(int(s) for s in size), interpolate_mode)
    return grid[0].permute(1, 2, 0).numpy()


def words(
    tokens: Sequence[str], scores: Tensor | Sequence[float], drop_special: bool = True, text: str | None = None
) -> list[tuple[str, float]]:
    """Merges sub-word pieces into words; a word's score is the sum over its pieces.

    Understands CLIP BPE (``</w>`` ends a word), WordPiece (``##`` continues one)
    and SentencePiece/GPT-2 (``▁``/``Ġ`` starts one). Whole-word tokenizers pass
    through unchanged.

    Args:
        tokens (list[str]): the tokens of one text, as the tokenizer's
            ``convert_ids_to_tokens`` returns them.
        scores (Tensor or list[float]): one score per token, e.g. a row of
            :meth:`GradECLIP.attribute` on text.
        drop_special (bool, optional): drop special tokens such as
            ``<|startoftext|>``, ``[CLS]`` or ``<pad>``. Unknown-word tokens
            (``<unk>``, ``[UNK]``) are words and are kept. Default: True.
        text (str, optional): the text the tokens come from: unknown-word
            tokens are then shown as the words typed there. Default: shown as
            the token (``<unk>``).

    Returns:
        *list[tuple[str, float]]*: ``(word, score)`` in order.

    Examples::

        >>> words(["<|startoftext|>", "hot</w>", "dog", "s</w>"], [0, 1.0, 2.0, 0.5])
        [('hot', 1.0), ('dogs', 2.5)]
        >>> words(["<s>", "a", "<unk>", "red", "</s>"], [0, 0.1, 0.2, 0.3, 0], text="a crimson red")
        [('a', 0.1), ('crimson', 0.2), ('red', 0.3)]
    """
    values = [float(s) for s in (scores.tolist() if isinstance(scores, Tensor) else scores)]
    if len(values) != len(tokens):
        raise ValueError(f"`scores` must have one entry per token ({len(tokens)}); got {len(values)}")
    kept = [
        (t, v) for t, v in zip(tokens, values, strict=True) if t in _UNKNOWN or not (drop_special and _SPECIAL.match(t))
    ]
    merged: list[tuple[str, float]] = []
    joins_previous = _word_rule([t for t, _ in kept])
    for i, (token, score) in enumerate(kept):
        piece = _strip_marks(token)
        if merged and joins_previous(i):
            word, total = merged[-1]
            merged[-1] = (word + piece, total + score)
        else:
            merged.append((piece, score))
    return _as_typed(merged, text) if text is not None else merged


def _as_typed(merged: list[tuple[str, float]], text: str) -> list[tuple[str, float]]:
    """Unknown-word tokens replaced by the words typed in ``text`` between the known words around them."""
    if not any(w in _UNKNOWN for w, _ in merged):
        return merged
    low, position, out = text.lower(), 0, list(merged)
    i = 0
    while i < len(out):
        if out[i][0] not in _UNKNOWN:
            found = low.find(out[i][0].lower(), position)
            position = found + len(out[i][0]) if found >= 0 else position
            i += 1
            continue
        j = i
        while j < len(out) and out[j][0] in _UNKNOWN:
            j += 1
        following = low.find(out[j][0].lower(), position) if j < len(out) else len(text)
        span = text[position : following if following >= 0 else len(text)].split()
        if len(span) == j - i:  # one typed word per unknown token
            out[i:j] = [(w, s) for w, (_, s) in zip(span, out[i:j], strict=True)]
        elif span:  # otherwise the first of them shows the typed words together
            out[i] = (" ".join(span), out[i][1])
        position = following if following >= 0 else position
        i = j
    return out


def _strip_marks(token: str) -> str:
    if token.endswith("</w>"):
        return token[: -len("</w>")]
    if token.startswith("##"):
        return token[2:]
    return token[1:] if token[:1] in ("▁", "Ġ") else token


def _word_rule(tokens: list[str]) -> Callable[[int], bool]:
    """Whether token ``i`` continues the word before it, for the tokenizer's style."""
    if any(t.endswith("</w>") for t in tokens):  # CLIP BPE: a word ends at '</w>'
        return lambda i: i > 0 and not tokens[i - 1].endswith("</w>")
    if any(t.startswith("##") for t in tokens):  # WordPiece
        return lambda i: tokens[i].startswith("##")
    if any(t[:1] in ("▁", "Ġ") for t in tokens):  # SentencePiece / GPT-2
        return lambda i: i > 0 and tokens[i][:1] not in ("▁", "Ġ")
    return lambda i: False
