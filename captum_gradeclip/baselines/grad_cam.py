"""Grad-CAM (Selvaraju et al., 2017) on the tokens that enter the last block."""

from __future__ import annotations

import torch
from captum.attr import GradientAttribution
from torch import Tensor, nn

from captum_gradeclip.adapters.dense import capability
from captum_gradeclip.attr.base import SimilarityAttribution
from captum_gradeclip.wrappers import ExplainContext, SimilarityWrapper


class TokenGradCAM(SimilarityAttribution, GradientAttribution):
    r"""Grad-CAM over tokens: the input tokens :math:`x_i` of a block, weighted by the
    token-averaged gradient of the score.

    .. math::

        H_i = \mathrm{ReLU}\Big(\sum_c \alpha_c x_{i,c}\Big), \qquad
        \alpha_c = \frac{1}{|P|}\sum_{j \in P} \frac{\partial S}{\partial x_{j,c}},

    where :math:`P` are the patch tokens (image) or the words (text). Unlike Captum's
    ``LayerGradCam``, which treats the token axis as channels on a token layer, this
    returns a map over tokens.

    Args:
        forward_func (ImageTextSimilarity or TextImageSimilarity): the wrapper to explain.
        layer (nn.Module, optional): the attention block whose layer input is used.
            Default: the last one.
        relu_attributions (bool, optional): apply the ReLU (Captum's name, as in
            ``LayerGradCam``; Grad-CAM's own default is on). ``False`` returns the
            signed map. Default: True.

    Examples::

        >>> maps = TokenGradCAM(ImageTextSimilarity(model, text_embeds=T)).attribute(pixel_values, target=0)
    """

    method_name = "Grad-CAM"
    listing_order = 5
    needs_residual_access = True

    def __init__(
        self, forward_func: SimilarityWrapper, layer: nn.Module | None = None, *, relu_attributions: bool = True
    ) -> None:
        super().__init__(forward_func)
        self.block = self._pick_blocks(layer, 1, None)[0]
        self._probe_layer = capability(self.similarity, "probe_layer", self.get_name(), (self.block,))
        self.relu_attributions = bool(relu_attributions)

    def _maps(self, inputs: Tensor, extra: tuple, columns: Tensor, ctx: ExplainContext) -> Tensor:
        sim = self.similarity
        with self._probe_layer(self.block, lambda x: x.detach().requires_grad_()) as layer:
            scores = sim(inputs, *extra)
        x = layer.x
        mask = ctx.output_mask.to(x.dtype)[:, :, None]
        rows = torch.arange(scores.shape[0], device=scores.device)
        maps = []
        for i, col in enumerate(columns):
            (grad,) = torch.autograd.grad(scores[rows, col].sum(), x, retain_graph=i + 1 < len(columns))
            alpha = (grad * mask).sum(1) / mask.sum(1).clamp_min(1)  # (N, C)
            cam = (alpha[:, None] * x.detach()).sum(-1)
            maps.append(torch.relu(cam) if self.relu_attributions else cam)
        return torch.stack(maps, dim=1)
