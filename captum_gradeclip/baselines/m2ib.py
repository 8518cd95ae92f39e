"""M2IB: multi-modal information bottleneck attribution (Wang et al., 2023)."""

from __future__ import annotations

from types import MappingProxyType

import torch
import torch.nn.functional as F
from captum.attr import GradientAttribution
from torch import Tensor, nn

from captum_gradeclip.adapters.dense import capability
from captum_gradeclip.attr.base import SimilarityAttribution
from captum_gradeclip.wrappers import ExplainContext, SimilarityWrapper


def capacity(alpha: Tensor, standardized: Tensor) -> Tensor:
    r"""Per-element KL divergence of the bottleneck from the feature prior.

    With :math:`\lambda = \sigma(\alpha)` and standardised features :math:`r`, the
    bottleneck :math:`z = \lambda r + (1 - \lambda)\epsilon`, :math:`\epsilon \sim N(0, 1)`,
    has :math:`\mathrm{KL}\big(N(\lambda r, (1-\lambda)^2) \,\|\, N(0, 1)\big)
    = \tfrac12\big((1-\lambda)^2 + \lambda^2 r^2 - 1\big) - \log(1 - \lambda)`.
    """
    lam = torch.sigmoid(alpha)
    return 0.5 * ((1 - lam) ** 2 + (lam * standardized) ** 2 - 1) - F.logsigmoid(-alpha)


class M2IB(SimilarityAttribution, GradientAttribution):
    r"""An information bottleneck on the tokens entering one block, trained per example.

    The word or patch tokens :math:`R` entering the block are replaced by
    :math:`z = \lambda R + (1 - \lambda)(\mu + \sigma \epsilon)`, with :math:`\mu, \sigma`
    the per-channel mean and standard deviation over the example's explained tokens and
    :math:`\lambda = \sigma(\alpha)` learned with Adam to maximise
    :math:`S(z) - \beta\, \overline{\mathrm{KL}}` (the wrapper's score minus the mean
    :func:`capacity`). The map is the capacity summed over channels. All examples of a
    batch are optimised together, each with its own :math:`\alpha`; one run per target.
    CLS, SOS, EOS and padding pass through unchanged.

    Args:
        forward_func (ImageTextSimilarity or TextImageSimilarity): the wrapper to explain.
        layer (nn.Module, optional): the attention block whose layer input is bottlenecked.
            Default: the block at three quarters of the depth (block 9 of 12).
        beta (float, optional): weight of the information term. Default: 0.1.
        steps (int, optional): optimisation steps. Default: 10.
        lr (float, optional): Adam's learning rate. Default: 1.
        init (float, optional): initial :math:`\alpha` (:math:`\lambda \approx 0.993`). Default: 5.
        seed (int, optional): seed of the noise; every example draws its own noise from
            it, so a map does not depend on the rest of the batch. Default: 0.

    Examples::

        >>> maps = M2IB(ImageTextSimilarity(model, text_embeds=T)).attribute(pixel_values, target=0)
    """

    method_name = "M2IB"
    listing_order = 9
    needs_residual_access = True
    quick_options = MappingProxyType({"steps": 2})

    def __init__(
        self,
        forward_func: SimilarityWrapper,
        layer: nn.Module | None = None,
        *,
        beta: float = 0.1,
        steps: int = 10,
        lr: float = 1.0,
        init: float = 5.0,
        seed: int = 0,
    ) -> None:
        super().__init__(forward_func)
        if layer is None:
            blocks = self.similarity.explained_blocks()
            layer = blocks[(3 * len(blocks)) // 4]
        self.block = self._pick_blocks(layer, 1, None)[0]
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"`steps` must be a non-negative int; got {steps!r}")
        if beta < 0 or lr <= 0:
            raise ValueError(f"`beta` must be >= 0 and `lr` > 0; got beta={beta!r}, lr={lr!r}")
        self.beta, self.steps, self.lr, self.init, self.seed = float(beta), steps, float(lr), float(init), seed
        self._probe_layer = capability(self.similarity, "probe_layer", self.get_name(), (self.block,))

    def _maps(self, inputs: Tensor, extra: tuple, columns: Tensor, ctx: ExplainContext) -> Tensor:
        sim = self.similarity
        with torch.no_grad(), self._probe_layer(self.block) as layer:
            sim(inputs, *extra)
        r = layer.x.detach()
        keep = ctx.output_mask.to(r.device)[:, :, None]
        m = keep.to(r.dtype)
        count = m.sum(1).clamp_min(1)
        mu = (r * m).sum(1, keepdim=True) / count[:, None]
        sigma = (((r - mu) ** 2 * m).sum(1, keepdim=True) / (count[:, None] - 1).clamp_min(1)).sqrt()
        sigma = sigma.clamp_min(torch.finfo(r.dtype).eps)
        standardized = (r - mu) / sigma
        rows = torch.arange(r.shape[0], device=r.device)
        per_element = (m.sum((1, 2)) * r.shape[-1]).clamp_min(1)
        maps = []
        for col in columns:
            # every example and every target draw the same noise from their own generator: a map depends
            # neither on the rest of the batch nor on the other requested targets
            generators = [torch.Generator(device=r.device).manual_seed(self.seed) for _ in range(r.shape[0])]
            # the bottleneck is optimised in float32 whatever the model's dtype (Adam's eps vanishes in fp16)
            alpha = torch.full(r.shape, self.init, device=r.device, dtype=torch.float32, requires_grad=True)
            optimizer = torch.optim.Adam([alpha], lr=self.lr)
            for _ in range(self.steps):
                lam = torch.sigmoid(alpha).to(r.dtype)
                noise = torch.stack(
                    [torch.randn(r.shape[1:], generator=g, device=r.device, dtype=r.dtype) for g in generators]
                )
                z = torch.where(keep, mu + sigma * (lam * standardized + (1 - lam) * noise), r)
                with self._probe_layer(self.block, lambda _x, z=z: z):
                    score = sim(inputs, *extra)[rows, col]
                information = (capacity(alpha, standardized.float()) * m).sum((1, 2)) / per_element
                loss = (self.beta * information - score.float()).sum()
                (alpha.grad,) = torch.autograd.grad(loss, alpha)
                optimizer.step()
            maps.append((capacity(alpha.detach(), standardized.float()) * m).sum(-1).to(r.dtype))
        return torch.stack(maps, dim=1)
