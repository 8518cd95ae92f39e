"""Words a model's tokenizer does not know, and the warning that names them.

A word-level tokenizer (ShapesCLIP's) reads every word outside its vocabulary as one unknown token, so texts
about anything but the shapes world all look alike to the model: equal scores, equal maps. The wrappers warn.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

#: Unknown-token strings of the common tokenizers.
UNKNOWN_TOKENS = ("<unk>", "[UNK]", "<|unk|>")
#: What ShapesCLIP knows, for the warning.
SHAPES_WORLD = (
    "ShapesCLIP knows only the shapes world (6 colours x 4 shapes: red, green, blue, yellow, purple, cyan; "
    "circle, square, triangle, cross; e.g. 'a red circle and a blue square')"
)
HUB_HINT = (
    "for other texts use a real CLIP from the model hub: --model hf:openai/clip-vit-base-patch16 on the command "
    "line, or transformers' CLIPModel.from_pretrained"
)


def unknown_words(texts: Sequence[str], tokenizer: object) -> list[str]:
    """The words of ``texts`` that ``tokenizer`` reads as its unknown token, as typed, each once, in order.

    Args:
        texts (list[str]): the texts.
        tokenizer (object): a ``transformers`` tokenizer (fast: the words come from its offsets).

    Returns:
        *list[str]*: empty when every word is known or the tokenizer has no unknown token.

    Examples::

        >>> unknown_words(["a woman in a red circle"], processor.tokenizer)
        ['woman', 'in']
    """
    if not callable(tokenizer):
        return []
    vocabulary = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
    unk = {vocabulary[t] for t in UNKNOWN_TOKENS if t in vocabulary}
    unk |= {getattr(tokenizer, "unk_token_id", None)} - {None}
    if not unk:
        return []
    try:
        batch = tokenizer(list(texts), return_offsets_mapping=True)
    except (NotImplementedError, TypeError, ValueError):  # a slow tokenizer has no offsets
        return []
    found: list[str] = []
    for text, ids, offsets in zip(texts, batch["input_ids"], batch["offset_mapping"], strict=True):
        for token, (start, end) in zip(ids, offsets, strict=True):
            word = text[start:end]
            if token in unk and word and word not in found:
                found.append(word)
    return found


def is_shapes_clip(tokenizer: object) -> bool:
    """Whether ``tokenizer`` is the embedded ShapesCLIP's (loaded from the package's model folders)."""
    from captum_gradeclip.zoo.shapes_clip import BACKBONES, shapes_clip_path

    name = str(getattr(tokenizer, "name_or_path", "") or "")
    if not name:
        return False
    try:
        folder = Path(name).resolve()
    except OSError:
        return False
    return any(folder == shapes_clip_path(b).resolve() for b in BACKBONES)


def unknown_words_message(words: Sequence[str], shapes_clip: bool) -> str:
    """The warning for ``words`` unknown to the tokenizer (ShapesCLIP's or another)."""
    listed = ", ".join(repr(w) for w in words)
    if shapes_clip:
        return (
            f"ShapesCLIP does not know the words {listed}: it reads each as an unknown token, so texts made of "
            f"them get the same score and the same map. {SHAPES_WORLD}; {HUB_HINT}"
        )
    return (
        f"the tokenizer does not know the words {listed}: it reads each as an unknown token, so the model cannot "
        "tell texts made of them apart"
    )


def warn_unknown_words(texts: Sequence[str], tokenizer: object, stacklevel: int = 3) -> list[str]:
    """Warns (``UserWarning``) about the words of ``texts`` that ``tokenizer`` does not know; returns them."""
    words = unknown_words(texts, tokenizer)
    if words:
        warnings.warn(unknown_words_message(words, is_shapes_clip(tokenizer)), UserWarning, stacklevel=stacklevel)
    return words
