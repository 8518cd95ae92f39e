"""Text deletion and insertion curves over the words of a text; SOS and EOS are never touched."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from captum_gradeclip._compat import _format_additional_forward_args
from captum_gradeclip.attr.contract import TargetType
from captum_gradeclip.metrics._common import (
    PerturbationCurve,
    check_batch_size,
    curve,
    fractions,
    measure_fn,
    ranks,
    single,
    target_column,
    token_scores,
)
from captum_gradeclip.wrappers import SimilarityWrapper

MODES = ("pad", "delete")


def remove_tokens(
    input_ids: Tensor, attention_mask: Tensor, removed: Tensor, mode: str, pad_token_id: int
) -> tuple[Tensor, Tensor]:
    """Removes the ``removed`` positions ``(N, L)`` of each text.

    ``"pad"`` turns them into padding in place (the padding id, attention mask 0);
    ``"delete"`` drops them and packs the rest to the left, padding the tail.

    Returns:
        *(input_ids, attention_mask)*, both ``(N, L)``.
    """
    if mode == "pad":
        return input_ids.masked_fill(removed, pad_token_id), attention_mask.masked_fill(removed, 0)
    keep = ~removed
    position = keep.long().cumsum(1) - 1
    rows = torch.arange(input_ids.shape[0], device=input_ids.device)[:, None].expand_as(keep)
    ids = torch.full_like(input_ids, pad_token_id)
    mask = torch.zeros_like(attention_mask)
    ids[rows[keep], position[keep]] = input_ids[keep]
    mask[rows[keep], position[keep]] = attention_mask[keep]
    return ids, mask


def _text_curve(
    insert: bool,
    forward_func: SimilarityWrapper,
    input_ids: Tensor | tuple[Tensor, ...],
    attributions: Tensor | tuple[Tensor, ...],
    target: TargetType,
    additional_forward_args: Any,
    *,
    steps: int,
    mode: str,
    measure: str,
    pad_token_id: int | None,
    batch_size: int,
    seed: int,
) -> PerturbationCurve:
    if not isinstance(forward_func, SimilarityWrapper) or forward_func.modality != "text":
        raise TypeError(
            f"`forward_func` must be a TextImageSimilarity (its adapter knows SOS, EOS and padding); "
            f"got {type(forward_func).__name__}"
        )
    if mode not in MODES:
        raise ValueError(f"`mode` must be one of {MODES}; got {mode!r}")
    check_batch_size(batch_size)
    ids = single(input_ids, "input_ids")
    if ids.dim() != 2 or ids.is_floating_point() or ids.dtype == torch.bool or ids.shape[0] == 0:
        raise ValueError(f"`input_ids` must be an integer (N, L) tensor; got {ids.dtype} {tuple(ids.shape)}")
    extra = _format_additional_forward_args(additional_forward_args) or ()
    mask = extra[0] if extra and isinstance(extra[0], Tensor) else torch.ones_like(ids)
    if mask.shape != ids.shape:
        raise ValueError(f"`attention_mask` must have the shape of `input_ids` {tuple(ids.shape)}")
    if pad_token_id is None:
        get_pad = getattr(forward_func.adapter, "pad_token_id", None)
        pad_token_id = get_pad() if get_pad is not None else None
        if pad_token_id is None:
            raise ValueError("`pad_token_id` is required: the model's config names no padding id")
    sim = forward_func
    scores = token_scores(attributions, tuple(ids.shape)).to(ids.device)
    ctx = sim.explain_context((ids,), (mask,))
    words = ctx.output_mask
    score = measure_fn(measure)
    fr = fractions(steps, "uniform").to(ids.device)
    order = ranks(scores.masked_fill(~words, float("-inf")), torch.Generator().manual_seed(seed))
    counts = (fr.double()[None] * words.sum(1, keepdim=True)).round().long()  # (N, S) words moved per step
    eos = ctx.query_index
    columns = None
    total = ids.shape[0] * len(fr)
    values = torch.empty(total, dtype=torch.float32, device=ids.device)
    with torch.no_grad():
        for start in range(0, total, batch_size):
            pair = torch.arange(start, min(start + batch_size, total), device=ids.device)
            i, s = pair // len(fr), pair % len(fr)
            top = order[i] < counts[i, s][:, None]  # the most relevant words first; never SOS, EOS or padding
            removed = top if not insert else words[i] & ~top
            new_ids, new_mask = remove_tokens(ids[i], mask[i], removed, mode, pad_token_id)
            before_eos = torch.arange(ids.shape[1], device=ids.device)[None] < eos[i, None]
            expected = eos[i] if mode == "pad" else eos[i] - (removed & before_eos).sum(1)
            if not torch.equal(sim.adapter.eos_index(new_ids, new_mask).to(expected), expected):
                raise ValueError(
                    f"`pad_token_id` {pad_token_id} moves the model's EOS position; pass another padding id"
                )
            out = sim(new_ids, new_mask)
            if columns is None:
                columns = target_column(target, ids.shape[0], out.shape[1]).to(ids.device)
            values[pair] = score(out, columns[i]).float()
    return curve(fr, values.reshape(ids.shape[0], len(fr)))


def text_deletion(
    forward_func: SimilarityWrapper,
    input_ids: Tensor | tuple[Tensor, ...],
    attributions: Tensor | tuple[Tensor, ...],
    target: TargetType,
    additional_forward_args: Any = None,
    *,
    steps: int = 20,
    mode: str = "pad",
    measure: str = "score",
    pad_token_id: int | None = None,
    batch_size: int = 256,
    seed: int = 0,
) -> PerturbationCurve:
    r"""Deletion over words: remove the most relevant words first and re-score after every step.

    At step k, ``round(fractions[k] * n)`` of a text's n words (SOS, EOS and padding
    are never candidates) are removed, most relevant first, ties in a seeded random
    order; lower AUC is better. All steps of all texts go through the wrapper in
    batches of ``batch_size``. The wrapper's adapter locates EOS, and the metric
    checks that removal never moves it.

    Args:
        forward_func (TextImageSimilarity): the wrapper; its M images are the zero-shot set.
        input_ids (Tensor or tuple[Tensor]): ``(N, L)`` token ids.
        attributions (Tensor or tuple[Tensor]): any Captum token attribution: ``(N, L)``
            scores, or ``(N, L, D)`` embedding attributions (summed over D).
        target (int, list[int] or Tensor): the explained column per text.
        additional_forward_args (optional): ``(attention_mask,)``.
        steps (int, optional): equal steps from 0 to 100% of the words. Default: 20.
        mode (str, optional): ``"pad"`` (default: the word becomes padding, masked out)
            or ``"delete"`` (the word is dropped and the text re-packed).
        measure (str, optional): ``"score"``, ``"top1"`` or ``"top5"`` over the wrapper's images.
        pad_token_id (int, optional): Default: the model config's padding id.
        batch_size (int, optional): texts per forward pass. Default: 256.
        seed (int, optional): seeds the tie-breaking. Default: 0.

    Returns:
        :class:`PerturbationCurve` with ``fractions (S,)``, ``scores (N, S)`` and ``auc (N,)``.

    Examples::

        >>> tok = GradECLIP(tsim).attribute(ids, target=0, additional_forward_args=(mask,))
        >>> text_deletion(tsim, ids, tok, target=0, additional_forward_args=(mask,)).auc.shape  # one per text
        torch.Size([3])
    """
    return _text_curve(
        False,
        forward_func,
        input_ids,
        attributions,
        target,
        additional_forward_args,
        steps=steps,
        mode=mode,
        measure=measure,
        pad_token_id=pad_token_id,
        batch_size=batch_size,
        seed=seed,
    )


def text_insertion(
    forward_func: SimilarityWrapper,
    input_ids: Tensor | tuple[Tensor, ...],
    attributions: Tensor | tuple[Tensor, ...],
    target: TargetType,
    additional_forward_args: Any = None,
    *,
    steps: int = 20,
    mode: str = "pad",
    measure: str = "score",
    pad_token_id: int | None = None,
    batch_size: int = 256,
    seed: int = 0,
) -> PerturbationCurve:
    r"""Insertion over words: start from SOS + EOS alone and put the most relevant words back first.

    The mirror of :func:`text_deletion` (same arguments); higher AUC is better.

    Returns:
        :class:`PerturbationCurve` with ``fractions (S,)``, ``scores (N, S)`` and ``auc (N,)``.

    Examples::

        >>> tok = GradECLIP(tsim).attribute(ids, target=0, additional_forward_args=(mask,))
        >>> text_insertion(tsim, ids, tok, target=0, additional_forward_args=(mask,), mode="delete").auc.shape
        torch.Size([3])
    """
    return _text_curve(
        True,
        forward_func,
        input_ids,
        attributions,
        target,
        additional_forward_args,
        steps=steps,
        mode=mode,
        measure=measure,
        pad_token_id=pad_token_id,
        batch_size=batch_size,
        seed=seed,
    )
