"""GAME: generic attention-model explainability (Chefer, Gur and Wolf, 2021), image and text."""

from __future__ import annotations

import contextlib

import torch
from captum.attr import GradientAttribution
from torch import Tensor, nn

from captum_gradeclip.adapters import AttentionRecord
from captum_gradeclip.attr.base import SimilarityAttribution
from captum_gradeclip.baselines._common import (
    allowed_keys,
    query_rows,
    record_probs,
)
from captum_gradeclip.ops import merge_heads, split_heads
from captum_gradeclip.wrappers import ExplainContext, SimilarityWrapper


def game_relevance(probs: list[Tensor], grads: list[Tensor]) -> Tensor:
    r"""The relevancy matrix :math:`R \leftarrow R + \bar A R`, from :math:`R = I`, with
    :math:`\bar A = \mathbb{E}_h\big[(\nabla A \odot A)^+\big]` per block.

    Args:
        probs (list[Tensor]): per block, first to last, attention probabilities ``(N, H, T, T)``.
        grads (list[Tensor]): the score's gradients with respect to them, same shapes.

    Returns:
        *Tensor* ``(N, T, T)``; the identity when every gradient is zero.
    """
    n, _, t, _ = probs[0].shape
    relevance = torch.eye(t, dtype=probs[0].dtype, device=probs[0].device).expand(n, t, t)
    for a, g in zip(probs, grads, strict=True):
        relevance = relevance + (g * a).clamp_min(0).mean(1) @ relevance
    return relevance


class GAME(SimilarityAttribution, GradientAttribution):
    r"""Chefer et al.'s gradient-weighted attention relevancy, read at the pooled token.

    The attention probabilities of each explained block are recomputed from its q and
    k (:math:`\mathrm{softmax}(q k^\top d^{-1/2} + \text{mask})`, causal with padding on
    the text side) and fed back as the block's attention, so that the score's gradient
    with respect to them is exact. The map is the pooled token's row of
    :func:`game_relevance`, over patches (image) or words (text).

    Args:
        forward_func (ImageTextSimilarity or TextImageSimilarity): the wrapper to explain.
        layer (nn.Module, optional): the last explained block. Default: the last one.
        layers (int, optional): number of blocks ending at ``layer``. Default: all.

    Examples::

        >>> maps = GAME(ImageTextSimilarity(model, text_embeds=T)).attribute(pixel_values, target=0)
        >>> tok = GAME(TextImageSimilarity(model, image_embeds=E)).attribute(
        ...     ids, target=0, additional_forward_args=(mask,))
    """

    method_name = "GAME"
    listing_order = 4
    needs_self_attention = True

    def __init__(
        self, forward_func: SimilarityWrapper, layer: nn.Module | None = None, *, layers: int | None = None
    ) -> None:
        super().__init__(forward_func)
        self.blocks = self._pick_blocks(layer, layers, None)

    def _maps(self, inputs: Tensor, extra: tuple, columns: Tensor, ctx: ExplainContext) -> Tensor:
        sim = self.similarity
        allowed = allowed_keys(sim, inputs, extra)
        probs: list[Tensor] = []

        def attend(record: AttentionRecord, _o: Tensor) -> Tensor:
            a = record_probs(record, allowed)
            a = a if a.requires_grad else a.detach().requires_grad_()  # the graph starts at the first block
            probs.append(a)
            return merge_heads(a @ split_heads(record.tensor("v"), record.num_heads))

        with contextlib.ExitStack() as stack:
            for block in self.blocks:
                stack.enter_context(self._probe(block, attend))
            scores = sim(inputs, *extra)
        rows = torch.arange(scores.shape[0], device=scores.device)
        maps = []
        for i, col in enumerate(columns):
            grads = torch.autograd.grad(scores[rows, col].sum(), probs, retain_graph=i + 1 < len(columns))
            relevance = game_relevance([a.detach() for a in probs], list(grads))
            maps.append(query_rows(relevance, ctx))
        return torch.stack(maps, dim=1)
