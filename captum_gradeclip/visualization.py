"""Helpers that hand our outputs to Captum's visualizers."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np
import torch
from captum.attr import LayerAttribution
from torch import Tensor

_SPECIAL = re.compile(r"^(<\|.*\|>|\[[A-Z]+\]|</?s>|<pad>|<unk>|<bos>|<eos>)$")


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
    tokens: Sequence[str], scores: Tensor | Sequence[float], drop_special: bool = True
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
            ``<|startoftext|>``, ``[CLS]`` or ``<pad>``. Default: True.

    Returns:
        *list[tuple[str, float]]*: ``(word, score)`` in order.

    Examples::

        >>> words(["<|startoftext|>", "hot</w>", "dog", "s</w>"], [0, 1.0, 2.0, 0.5])
        [('hot', 1.0), ('dogs', 2.5)]
    """
    values = [float(s) for s in (scores.tolist() if isinstance(scores, Tensor) else scores)]
    if len(values) != len(tokens):
        raise ValueError(f"`scores` must have one entry per token ({len(tokens)}); got {len(values)}")
    kept = [(t, v) for t, v in zip(tokens, values, strict=True) if not (drop_special and _SPECIAL.match(t))]
    merged: list[tuple[str, float]] = []
    joins_previous = _word_rule([t for t, _ in kept])
    for i, (token, score) in enumerate(kept):
        piece = _strip_marks(token)
        if merged and joins_previous(i):
            word, total = merged[-1]
            merged[-1] = (word + piece, total + score)
        else:
            merged.append((piece, score))
    return merged


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
