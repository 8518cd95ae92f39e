"""MaskCLIP (Zhou, Loy and Dai, 2022): dense image-text similarity through the value path."""

from __future__ import annotations

import torch
from torch import Tensor

from captum_gradeclip.adapters import AttentionRecord
from captum_gradeclip.baselines._common import WrapperAttribution, capability, gather_columns
from captum_gradeclip.wrappers import ExplainContext, _Similarity


def _values(record: AttentionRecord, _o: Tensor) -> Tensor:
    return record.v  # type: ignore[return-value]


class MaskCLIP(WrapperAttribution):
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

    def __init__(self, forward_func: _Similarity) -> None:
        super().__init__(forward_func)
        self.block = forward_func.explained_blocks()[-1]
        self._probe_layer = capability(forward_func, "probe_layer", self.get_name())
        self._project = capability(forward_func, "project_tokens", self.get_name())

    @classmethod
    def get_name(cls) -> str:
        return "MaskCLIP"

    def _maps(self, inputs: Tensor, extra: tuple, columns: Tensor, ctx: ExplainContext) -> Tensor:
        sim = self.similarity
        with torch.no_grad():
            with sim.adapter.probe(self.block, _values), self._probe_layer(self.block) as layer:
                sim(inputs, *extra)
            tokens = self._project(layer.y, sim.modality)  # (N, T, E)
            n, t, e = tokens.shape
            scores = sim.similarity(tokens.reshape(n * t, e)).reshape(n, t, -1)
        return gather_columns(scores, columns)
