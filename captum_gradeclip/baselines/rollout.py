"""Attention rollout (Abnar and Zuidema, 2020)."""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn

from captum_gradeclip.attr.base import SimilarityAttribution
from captum_gradeclip.baselines._common import (
    allowed_keys,
    keep,
    query_rows,
    record_probs,
)
from captum_gradeclip.wrappers import ExplainContext, SimilarityWrapper


def rollout(probs: list[Tensor]) -> Tensor:
    r"""Rolls attention out over blocks: :math:`R = \hat A_L \cdots \hat A_1`, with
    :math:`\hat A = \mathrm{rownorm}(\bar A + I)` and :math:`\bar A` the mean over heads.

    Args:
        probs (list[Tensor]): per block, first to last, attention probabilities ``(N, H, T, T)``.

    Returns:
        *Tensor* ``(N, T, T)``.
    """
    eye = torch.eye(probs[0].shape[-1], dtype=probs[0].dtype, device=probs[0].device)
    out = None
    for a in probs:
        a_hat = a.mean(1) + eye
        a_hat = a_hat / a_hat.sum(-1, keepdim=True)
        out = a_hat if out is None else a_hat @ out
    return out  # type: ignore[return-value]  # probs is not empty (probs[0] above): the loop set it


class AttentionRollout(SimilarityAttribution):
    r"""Attention rollout: the pooled token's row of :func:`rollout` over the explained blocks.

    The map does not depend on the target: every requested column gets the same map.

    Args:
        forward_func (ImageTextSimilarity or TextImageSimilarity): the wrapper to explain.
        layer (nn.Module, optional): the last block rolled out. Default: the last one.
        layers (int, optional): number of blocks ending at ``layer``. Default: all.

    Examples::

        >>> maps = AttentionRollout(ImageTextSimilarity(model, text_embeds=T)).attribute(pixel_values, target=0)
    """

    method_name = "Rollout"
    listing_order = 3
    needs_self_attention = True

    def __init__(
        self, forward_func: SimilarityWrapper, layer: nn.Module | None = None, *, layers: int | None = None
    ) -> None:
        super().__init__(forward_func)
        self.blocks = self._pick_blocks(layer, layers, None)

    def _maps(self, inputs: Tensor, extra: tuple, columns: Tensor, ctx: ExplainContext) -> Tensor:
        sim = self.similarity
        with torch.no_grad(), contextlib.ExitStack() as stack:
            records = [stack.enter_context(self._probe(b, keep)) for b in self.blocks]
            sim(inputs, *extra)
            allowed = allowed_keys(sim, inputs, extra)
            relevance = rollout([record_probs(r, allowed) for r in records])
        return query_rows(relevance, ctx)[:, None].expand(-1, columns.shape[0], -1)
