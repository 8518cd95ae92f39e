"""Raw attention: the pooled token's attention row of one block, averaged over heads."""

from __future__ import annotations

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


class RawAttention(SimilarityAttribution):
    r"""The attention of the pooled token (CLS, or EOS for text) to every token, mean over heads.

    .. math:: H_i = \frac{1}{H}\sum_h A^h_{0,i}

    The map does not depend on the target: every requested column gets the same map.

    Args:
        forward_func (ImageTextSimilarity or TextImageSimilarity): the wrapper to explain.
        layer (nn.Module, optional): the attention block to read. Default: the last one.

    Examples::

        >>> maps = RawAttention(ImageTextSimilarity(model, text_embeds=T)).attribute(pixel_values, target=0)
    """

    method_name = "Raw attention"
    listing_order = 2

    def __init__(self, forward_func: SimilarityWrapper, layer: nn.Module | None = None) -> None:
        super().__init__(forward_func)
        self.block = self._pick_blocks(layer, 1, None)[0]

    def _maps(self, inputs: Tensor, extra: tuple, columns: Tensor, ctx: ExplainContext) -> Tensor:
        sim = self.similarity
        with torch.no_grad(), sim.adapter.probe(self.block, keep) as record:
            sim(inputs, *extra)
            probs = record_probs(record, allowed_keys(sim, inputs, extra)).mean(1)
        return query_rows(probs, ctx)[:, None].expand(-1, columns.shape[0], -1)
