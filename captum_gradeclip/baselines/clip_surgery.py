"""CLIP Surgery (Li et al., 2023): the v-v attention path plus feature surgery."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor

from captum_gradeclip.adapters.dense import capability
from captum_gradeclip.attr.base import SimilarityAttribution
from captum_gradeclip.baselines._common import (
    gather_columns,
    keep,
)
from captum_gradeclip.ops import is_pool, merge_heads, split_heads
from captum_gradeclip.wrappers import ExplainContext, SimilarityWrapper


def vv_attention(v: Tensor, heads: int) -> Tensor:
    r"""Self-attention of the values with themselves, :math:`\mathrm{softmax}(v v^\top d^{-1/2})\, v`
    per head, heads merged: ``(N, T, C) -> (N, T, C)``."""
    vh = split_heads(v, heads)
    probs = torch.softmax((vh @ vh.transpose(-1, -2)) * vh.shape[-1] ** -0.5, dim=-1)
    return merge_heads(probs @ vh)


def feature_surgery(
    tokens: Tensor, pooled: Tensor, texts: Tensor, redundant: Tensor | None = None, temperature: float = 2.0
) -> Tensor:
    r"""CLIP Surgery's redundancy removal over the text set.

    With :math:`\hat F_i` the normalised token features, :math:`\hat t_j` the normalised
    texts and :math:`p = \mathrm{softmax}_j(\tau\, \hat f_{pool} \cdot \hat t_j)`,
    :math:`w_j = p_j / \bar p`, the score of token i for text j is
    :math:`\sum_c \big(w_j \hat F_{ic} \hat t_{jc} - \frac{1}{M}\sum_{j'} w_{j'} \hat F_{ic} \hat t_{j'c}\big)`.
    With ``redundant`` (e.g. the embedding of an empty prompt) it is instead
    :math:`\hat F_i \cdot (\hat t_j - \hat r)`.

    Args:
        tokens (Tensor): ``(N, T, E)`` token features.
        pooled (Tensor): ``(N, E)`` pooled image embedding.
        texts (Tensor): ``(M, E)`` text embeddings.
        redundant (Tensor, optional): ``(E,)`` or ``(1, E)`` embedding to subtract.
        temperature (float, optional): :math:`\tau`. Default: 2.

    Returns:
        *Tensor* ``(N, T, M)``; summed over the M texts it is 0 at every token (without ``redundant``).
    """
    tokens, texts = F.normalize(tokens, dim=-1), F.normalize(texts, dim=-1)
    if redundant is not None:
        return tokens @ (texts - F.normalize(redundant.reshape(1, -1), dim=-1)).T
    prob = (temperature * F.normalize(pooled, dim=-1) @ texts.T).softmax(-1)  # (N, M)
    weights = prob / prob.mean(-1, keepdim=True)
    feats = tokens[:, :, None, :] * texts[None, None] * weights[:, None, :, None]  # (N, T, M, E)
    return (feats - feats.mean(2, keepdim=True)).sum(-1)


class CLIPSurgery(SimilarityAttribution):
    r"""CLIP Surgery: a parallel v-v attention path over the last blocks, then feature surgery.

    From the input :math:`x` of the first surgery block, the v-v path adds, per block,
    the out-projected :func:`vv_attention` of that block's values (the values of the
    model's own forward), with no MLP: :math:`x^{vv} = x + \sum_l W_o^l\, \mathrm{vv}(v^l) + b_o^l`.
    Its tokens go through the final norm and projection, and :func:`feature_surgery`
    against the wrapper's texts gives the map. Gradient-free; image wrappers only.
    With one text and no ``redundant_embeds`` the surgery would cancel everything, so
    the map is then the plain cosine of the v-v tokens with the text. At an attention
    pool (ResNet, SigLIP's head), the tower's only explained block, there is no residual:
    :math:`x^{vv} = W_o\, \mathrm{vv}(v) + b_o`, then what follows the pool.

    Args:
        forward_func (ImageTextSimilarity): the wrapper to explain.
        layers (int, optional): number of last blocks on the v-v path (the paper: 6).
            Default: 6, capped at the depth.
        redundant_embeds (Tensor, optional): ``(E,)`` embedding of the redundant prompt
            (the paper uses the empty prompt ``""`` for a single text).
        temperature (float, optional): the softmax multiplier of the text weights. Default: 2.

    Examples::

        >>> maps = CLIPSurgery(ImageTextSimilarity(model, text_embeds=T)).attribute(pixel_values)  # (N, M, h, w)
    """

    method_name = "CLIP Surgery"
    listing_order = 7
    needs_residual_access = True

    modalities = ("image",)

    def __init__(
        self,
        forward_func: SimilarityWrapper,
        *,
        layers: int | None = None,
        redundant_embeds: Tensor | None = None,
        temperature: float = 2.0,
    ) -> None:
        super().__init__(forward_func)
        sim = self.similarity
        self.blocks = self._pick_blocks(None, layers, 6)
        if redundant_embeds is not None and (
            not isinstance(redundant_embeds, Tensor) or redundant_embeds.numel() != sim.reference_embeds.shape[-1]
        ):
            raise ValueError(
                f"`redundant_embeds` must be one embedding of size {sim.reference_embeds.shape[-1]}; "
                f"got {redundant_embeds!r}"
            )
        self.redundant = redundant_embeds
        self.temperature = float(temperature)
        last = self._pick_blocks(None, 1, None)[0]
        self._probe_layer = capability(sim, "probe_layer", self.get_name(), (self.blocks[0], last))
        self._project = capability(sim, "project_tokens", self.get_name())

    def _maps(self, inputs: Tensor, extra: tuple, columns: Tensor, ctx: ExplainContext) -> Tensor:
        sim, adapter = self.similarity, self.similarity.adapter
        with torch.no_grad():
            with contextlib.ExitStack() as stack:
                records = [stack.enter_context(adapter.probe(b, keep)) for b in self.blocks]
                first = stack.enter_context(self._probe_layer(self.blocks[0]))
                last = stack.enter_context(self._probe_layer(sim.explained_blocks()[-1]))
                sim(inputs, *extra)
            vv = sum(adapter.out_projection(r.module())(vv_attention(r.tensor("v"), r.num_heads)) for r in records)
            if is_pool(records[-1]):  # an attention pool (the only block) has no residual around it
                tokens = self._project(vv, sim.modality)
                out = adapter.out_projection(records[-1].module())
                pooled = self._project(out(records[-1].tensor("o")), sim.modality)[:, 0]
            else:
                tokens = self._project(first.x + vv, sim.modality)
                pooled = self._project(last.y[:, :1], sim.modality)[:, 0]
            texts = sim.reference_embeds.to(tokens.dtype)
            redundant = self.redundant
            if redundant is None and texts.shape[0] == 1:
                scores = F.normalize(tokens, dim=-1) @ texts.T
            else:
                redundant = None if redundant is None else redundant.to(tokens)
                scores = feature_surgery(tokens, pooled, texts, redundant, self.temperature)
        return gather_columns(scores, columns)
