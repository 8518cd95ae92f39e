"""MaskCLIP (Zhou, Loy and Dai, 2022): dense image-text similarity through the value path."""

from __future__ import annotations

import torch
from torch import Tensor

from captum_gradeclip.adapters.dense import capability, value_path_tokens
from captum_gradeclip.attr.base import SimilarityAttribution
from captum_gradeclip.baselines._common import gather_columns
from captum_gradeclip.wrappers import ExplainContext, SimilarityWrapper


class MaskCLIP(SimilarityAttribution):
    r"""Each token's own value taken through the rest of the last block and the head.

    In the last block every token attends only to itself (:math:`o_i = v_i`); the
    residual, MLP, final norm and projection then give a per-token embedding
    :math:`F_i`, and the map is the wrapper's score of :math:`F_i` against each
    reference (cosine by default). Gradient-free; image wrappers only.

    Args:
        forward_func (ImageTextSimilarity): the wrapper to explain.

    Examples::

        >>> maps = MaskCLIP(ImageTextSimilarity(model, text_embeds=T)).attribute(pixel_values, target=0)
    """

    method_name = "MaskCLIP"
    listing_order = 6
    needs_residual_access = True

    modalities = ("image",)

    def __init__(self, forward_func: SimilarityWrapper) -> None:
        super().__init__(forward_func)
        self.block = self._pick_blocks(None, 1, None)[0]
        capability(self.similarity, "probe_layer", self.get_name(), (self.block,))
        capability(self.similarity, "project_tokens", self.get_name())

    def _maps(self, inputs: Tensor, extra: tuple, columns: Tensor, ctx: ExplainContext) -> Tensor:
        sim = self.similarity
        with torch.no_grad():
            tokens = value_path_tokens(sim, inputs, *extra)  # (N, T, E)
            n, t, e = tokens.shape
            scores = sim.similarity(tokens.reshape(n * t, e)).reshape(n, t, -1)
        return gather_columns(scores, columns)
