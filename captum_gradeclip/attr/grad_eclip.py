"""Grad-ECLIP (Zhao, Wang, Hsiao, Chan): gradient-based visual and textual explanations for CLIP."""

from __future__ import annotations

import math
from types import MappingProxyType
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captum_gradeclip.adapters import AttentionRecord, PooledTail
from captum_gradeclip.attr.base import AttentionAttribution, _as_leaf
from captum_gradeclip.attr.contract import renamed_flag
from captum_gradeclip.ops import pooled_attention, single_head_attention
from captum_gradeclip.wrappers import ExplainContext, SimilarityWrapper

MODES = ("native", "paper")
QK_SOURCES = ("raw", "out_proj")


def loosened_attention(q_query: Tensor, k: Tensor, heads: int, key_mask: Tensor) -> Tensor:
    r"""The spatial weights :math:`\lambda_i = \mathrm{minmax}_i \cos(q_0, k_i)`, per head.

    Args:
        q_query (Tensor): ``(N, C)`` query of the pooled token.
        k (Tensor): ``(N, T, C)`` keys.
        heads (int): number of heads the C channels are split into.
        key_mask (Tensor): ``(N, T)`` positions over which to min-max normalise.

    Returns:
        *Tensor* ``(N, T, heads)`` in [0, 1], zero outside ``key_mask``; a constant
        cosine gives 1, never NaN.
    """
    n, t, c = k.shape
    r = F.cosine_similarity(q_query.reshape(n, 1, heads, c // heads), k.reshape(n, t, heads, c // heads), dim=-1)
    mask = key_mask[:, :, None]
    r_min = r.masked_fill(~mask, math.inf).amin(dim=1, keepdim=True)
    r_max = r.masked_fill(~mask, -math.inf).amax(dim=1, keepdim=True)
    span = r_max - r_min
    flat = span <= torch.finfo(r.dtype).eps
    lam = torch.where(flat, torch.ones_like(r), (r - r_min) / torch.where(flat, torch.ones_like(span), span))
    return lam * mask


class GradECLIP(AttentionAttribution):
    r"""Grad-ECLIP: channel weights from gradients, spatial weights from the loosened
    attention, both applied to the values of an attention block.

    For the pooled token 0 (CLS, or EOS for text) of an explained block with values
    :math:`v_i`, the map over tokens :math:`i` is

    .. math::

        H_i = \mathrm{ReLU}\Big(\sum_h \lambda^h_i \, (w^h \cdot v^h_i)\Big),
        \qquad w = \frac{\partial S}{\partial o_0},
        \qquad \lambda^h_i = \mathrm{minmax}_i \cos(q^h_0, k^h_i),

    where :math:`S` is the wrapper's score and :math:`o_0` the pooled row of the
    attention output before the out-projection. Image maps of several blocks are
    summed after the ReLU; text token scores are summed over blocks before it.

    Args:
        forward_func (ImageTextSimilarity or TextImageSimilarity): the wrapper to
            explain, its bound ``forward``, or the wrapper inside ``nn.DataParallel``.
        layer (nn.Module, optional): the last explained attention block. Default:
            the last block of the wrapper's tower.
        device_ids (list[int], optional): ``None``, or a ``DataParallel``'s own
            ``device_ids`` (the explanation runs on one device).
        mode (str, optional): ``"native"`` (default) explains the model as it is,
            with :math:`\lambda` per head. ``"paper"`` reproduces the official code:
            on the image side the explained blocks are recomputed with one head over
            all C channels, and the score comes from that forward; on the text side
            :math:`\lambda` and :math:`w \cdot v` use the merged heads.
        layers (int, optional): number of blocks ending at ``layer``. Default: 1 for
            images, 8 for text (capped at the depth).
        loosened_attention (bool, optional): apply :math:`\lambda`; ``False`` is the
            paper's ablation. Default: True.
        qk_source (str, optional): in paper mode, compute :math:`\lambda` from the
            ``"raw"`` in-projected q/k (the notebooks, default) or from q/k passed
            through the ``"out_proj"`` (the evaluation scripts).
        relu_attributions (bool, optional): apply the final ReLU (Captum's name for
            the switch, as in ``LayerGradCam``; Grad-ECLIP's default is on). ``False``
            returns the signed sum :math:`\sum_h \lambda^h_i (w^h \cdot v^h_i)`
            (summed over blocks), as the paper's region-phrase fine-tuning uses it.
            Default: True.
        relu (bool, optional): deprecated alias of ``relu_attributions``.

    Examples::

        >>> sim = ImageTextSimilarity(model, text_embeds=T)
        >>> explainer = GradECLIP(sim)
        >>> maps = explainer.attribute(pixel_values, target=0)   # (N, 1, h, w)
        >>> every = explainer.attribute(pixel_values)            # (N, M, h, w)
        >>> from captum.attr import NoiseTunnel
        >>> smooth = NoiseTunnel(explainer).attribute(pixel_values, nt_type="smoothgrad",
        ...                                           nt_samples=8, stdevs=0.1, target=0)
    """

    default_layers: ClassVar[dict[str, int]] = {"image": 1, "text": 8}
    method_name = "Grad-ECLIP"
    #: ``mode="native"`` (the default) and ``mode="paper"`` are listed as two methods.
    variants = MappingProxyType(
        {"Grad-ECLIP (native)": MappingProxyType({}), "Grad-ECLIP (paper)": MappingProxyType({"mode": "paper"})}
    )
    listing_order = 0

    def __init__(
        self,
        forward_func: SimilarityWrapper,
        layer: nn.Module | None = None,
        device_ids: list[int] | None = None,
        *,
        mode: str = "native",
        layers: int | None = None,
        loosened_attention: bool = True,
        qk_source: str = "raw",
        relu_attributions: bool | None = None,
        relu: bool | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"`mode` must be one of {MODES}; got {mode!r}")
        if qk_source not in QK_SOURCES:
            raise ValueError(f"`qk_source` must be one of {QK_SOURCES}; got {qk_source!r}")
        if qk_source != "raw" and mode != "paper":
            raise ValueError("`qk_source` applies to mode='paper' only")
        super().__init__(forward_func, layer, device_ids, layers=layers)
        self.mode = mode
        self.use_loosened_attention = bool(loosened_attention)
        self.qk_source = qk_source
        self.relu_attributions = renamed_flag(relu_attributions, relu, "relu_attributions", "relu", True)
        self._recompute = mode == "paper" and self.similarity.modality == "image"

    def _substitute(self, record: AttentionRecord, o: Tensor) -> Tensor:
        if self._recompute:
            o = single_head_attention(record.tensor("q"), record.tensor("k"), record.tensor("v"))
        return _as_leaf(record, o)

    def _pooled_output(self, tail: PooledTail, q_row: Tensor, k: Tensor, v: Tensor) -> Tensor:
        if self._recompute:
            return pooled_attention(q_row, k, v, heads=1, scale=q_row.shape[-1] ** -0.5)
        return tail.attend(q_row, k, v)

    def _layer_map(self, record: AttentionRecord, w: Tensor, ctx: ExplainContext) -> Tensor:
        q, k, v = (record.tensor(name).detach() for name in ("q", "k", "v"))
        heads = 1 if self.mode == "paper" else record.num_heads
        if self.qk_source == "out_proj":
            out_proj = self.similarity.adapter.out_projection(record.module())
            q, k = out_proj(q), out_proj(k)
        # fp16/bf16 models: the map's own arithmetic runs in float32 (the min-max of close cosines
        # would otherwise amplify rounding); the result is cast back to the model's dtype
        q, k, v, w = (t.float() if t.dtype in (torch.float16, torch.bfloat16) else t for t in (q, k, v, w))
        n, t, c = v.shape
        # lambda^h_i scales head h of v_i, so sum_h lambda^h_i (w^h . v^h_i) = w . (lambda v)_i
        if self.use_loosened_attention:
            rows = torch.arange(n, device=v.device)
            lam = loosened_attention(q[rows, ctx.query_index], k, heads, ctx.key_mask)  # (N, T, heads)
            v = (lam[..., None] * v.reshape(n, t, heads, c // heads)).reshape(n, t, c)
        # sum_c w_c v_{i,c} for every target k, example n and token i: one batched product
        return torch.einsum("knc,ntc->knt", w.reshape(-1, n, c), v)

    def _combine(self, layer_maps: list[Tensor]) -> Tensor:
        if not self.relu_attributions:
            return torch.stack(layer_maps).sum(0)
        if self.similarity.modality == "text":
            return torch.relu(torch.stack(layer_maps).sum(0))  # text: sum over blocks, then ReLU
        return torch.stack([torch.relu(m) for m in layer_maps]).sum(0)
