"""MaskCLIP (Zhou, Loy and Dai, 2022): dense image-text similarity through the value path."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from captum_gradeclip.adapters import AttentionRecord
from captum_gradeclip.attr._base import SimilarityAttribution
from captum_gradeclip.baselines._common import capability, gather_columns, is_pool
from captum_gradeclip.methods import register
from captum_gradeclip.wrappers import ExplainContext, SimilarityWrapper


def _values(record: AttentionRecord, o: Tensor) -> Tensor:
    return o if is_pool(record) else record.v  # type: ignore[return-value]


def value_path_tokens(similarity: SimilarityWrapper, inputs: Tensor, *extra: Any) -> Tensor:
    r"""MaskCLIP's dense features: every token's own value through the rest of the last block and the head.

    In the wrapper's last explained block every token attends only to itself
    (:math:`o_i = v_i`); the residual, MLP, final norm and projection then give one
    embedding per token. At an attention pool (ResNet, SigLIP's head), which has no
    residual, each token's out-projected value goes through what follows the pool
    (MaskCLIP's ResNet rule). Runs under the caller's grad mode, so it can be trained through.

    Args:
        similarity (ImageTextSimilarity): a wrapper whose adapter has ``probe_layer`` and
            ``project_tokens`` (every CLIP loader but the ViT classifier).
        inputs (Tensor): ``pixel_values (N, C, H, W)``.
        *extra: further forward arguments of the wrapper.

    Returns:
        *Tensor* ``(N, T, E)``: token 0 is CLS, then the patches in row-major order.

    Examples::

        >>> dense = value_path_tokens(ImageTextSimilarity(model, text_embeds=T), pixel_values)
    """
    adapter, block = similarity.adapter, similarity.explained_blocks()[-1]
    probe_layer = capability(similarity, "probe_layer", "value_path_tokens", (block,))
    project = capability(similarity, "project_tokens", "value_path_tokens")
    with adapter.probe(block, _values) as record, probe_layer(block) as layer:
        similarity(inputs, *extra)
    tokens = adapter.out_projection(block)(record.v) if is_pool(record) else layer.y
    return project(tokens, similarity.modality)


@register("MaskCLIP", order=6)
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

    modalities = ("image",)

    def __init__(self, forward_func: SimilarityWrapper) -> None:
        super().__init__(forward_func)
        self.block = self._pick_blocks(None, 1, None)[0]
        capability(self.similarity, "probe_layer", self.get_name(), (self.block,))
        capability(self.similarity, "project_tokens", self.get_name())

    @classmethod
    def get_name(cls) -> str:
        return "MaskCLIP"

    def _maps(self, inputs: Tensor, extra: tuple, columns: Tensor, ctx: ExplainContext) -> Tensor:
        sim = self.similarity
        with torch.no_grad():
            tokens = value_path_tokens(sim, inputs, *extra)  # (N, T, E)
            n, t, e = tokens.shape
            scores = sim.similarity(tokens.reshape(n * t, e)).reshape(n, t, -1)
        return gather_columns(scores, columns)
