"""Tokens and words: sub-word pieces merged into words (:func:`words`), and the words a tokenizer does not know.

A word-level tokenizer (ShapesCLIP's) reads every word outside its vocabulary as one unknown token, so texts
about anything but the shapes world all look alike to the model: equal scores, equal maps. The wrappers warn.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Sequence

from torch import Tensor

#: Unknown-token strings of the common tokenizers.
UNKNOWN_TOKENS = ("<unk>", "[UNK]", "<|unk|>")
_SPECIAL = re.compile(r"^(<\|.*\|>|\[[A-Z]+\]|</?s>|<pad>|<unk>|<bos>|<eos>)$")
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
    """Whether ``tokenizer`` is the embedded ShapesCLIP's: :func:`captum_gradeclip.zoo.load_shapes_clip` marks it
    (``tokenizer.is_shapes_clip``), so this module needs nothing from the zoo."""
    return getattr(tokenizer, "is_shapes_clip", False) is True


def unknown_words_message(words: Sequence[str], shapes_clip: bool) -> str:
    """The warning for ``words`` unknown to the tokenizer (ShapesCLIP's or another)."""
    listed = ", ".join(repr(w) for w in words)
    if shapes_clip:
        return (
            f"ShapesCLIP does not know the words {listed}: it reads every one of them as the same unknown token, so "
            "texts that differ only in such words get the same score and the same map, and otherwise differ only "
            f"by how many unknown tokens they hold. {SHAPES_WORLD}; {HUB_HINT}"
        )
    return (
        f"the tokenizer does not know the words {listed}: it reads every one of them as the same unknown token, so "
        "texts that differ only in such words get the same score and the same map"
    )


def warn_unknown_words(texts: Sequence[str], tokenizer: object, stacklevel: int = 3) -> list[str]:
    """Warns (``UserWarning``) about the words of ``texts`` that ``tokenizer`` does not know; returns them."""
    words = unknown_words(texts, tokenizer)
    if words:
        warnings.warn(unknown_words_message(words, is_shapes_clip(tokenizer)), UserWarning, stacklevel=stacklevel)
    return words


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
        (t, v)
        for t, v in zip(tokens, values, strict=True)
        if t in UNKNOWN_TOKENS or not (drop_special and _SPECIAL.match(t))
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
    if not any(w in UNKNOWN_TOKENS for w, _ in merged):
        return merged
    low, position, out = text.lower(), 0, list(merged)
    i = 0
    while i < len(out):
        if out[i][0] not in UNKNOWN_TOKENS:
            found = low.find(out[i][0].lower(), position)
            position = found + len(out[i][0]) if found >= 0 else position
            i += 1
            continue
        j = i
        while j < len(out) and out[j][0] in UNKNOWN_TOKENS:
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
