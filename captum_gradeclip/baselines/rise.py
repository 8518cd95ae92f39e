"""RISE: randomized input sampling for explanation (Petsiuk, Das and Saenko, 2018)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from types import MappingProxyType

import torch
import torch.nn.functional as F
from torch import Tensor

from captum_gradeclip.attr.base import SimilarityAttribution
from captum_gradeclip.wrappers import ExplainContext, SimilarityWrapper

#: Masks drawn from the generator at a time.
_DRAW = 64


def rise_masks(
    n: int, size: tuple[int, int], grid: int = 7, p: float = 0.5, generator: torch.Generator | None = None
) -> Tensor:
    """``n`` RISE masks ``(n, H, W)`` in [0, 1]: a random binary ``grid`` x ``grid`` pattern
    with keep-probability ``p``, upsampled bilinearly to one cell more than ``size`` and
    cropped at a random offset within a cell."""
    h, w = size
    cell_h, cell_w = math.ceil(h / grid), math.ceil(w / grid)
    device = generator.device if generator is not None else torch.device("cpu")
    coarse = (torch.rand(n, 1, grid, grid, generator=generator, device=device) < p).float()
    up = F.interpolate(coarse, size=((grid + 1) * cell_h, (grid + 1) * cell_w), mode="bilinear", align_corners=False)
    dy = torch.randint(0, cell_h, (n,), generator=generator, device=device)
    dx = torch.randint(0, cell_w, (n,), generator=generator, device=device)
    ys = (dy[:, None] + torch.arange(h, device=device))[:, :, None]
    xs = (dx[:, None] + torch.arange(w, device=device))[:, None, :]
    return up[torch.arange(n, device=device)[:, None, None], 0, ys, xs].clamp(0, 1)


class RISE(SimilarityAttribution):
    r"""RISE: the score-weighted mean of random masks,
    :math:`S = \frac{1}{n\, \mathbb{E}[M]} \sum_k f(x \odot M_k + b\,(1 - M_k))\, M_k`.

    Batched: the images times the masks go through the wrapper ``batch_size`` at a
    time, every column at once. Returns pixel maps ``(N, 1, H, W)`` (``(N, M, H, W)``
    with ``target=None``) at the input's resolution. Image wrappers only.

    Args:
        forward_func (ImageTextSimilarity): the wrapper to explain.
        n_masks (int, optional): number of random masks. Default: 4000 (the paper's).
        grid (int, optional): cells per side of the coarse masks. Default: 7.
        p (float, optional): probability that a cell is kept. Default: 0.5.
        masks (Tensor, optional): ``(n, H, W)`` or ``(n, 1, H, W)`` masks to use instead
            of random ones; then :math:`\mathbb{E}[M]` is their mean.
        baseline (float or Tensor, optional): what masked-out pixels become. Default: 0.
        batch_size (int, optional): masked images per forward pass. Default: 256.
        seed (int, optional): seed of the random masks. Default: 0.

    Examples::

        >>> maps = RISE(ImageTextSimilarity(model, text_embeds=T), n_masks=500).attribute(pixel_values, target=0)
    """

    method_name = "RISE"
    listing_order = 8
    quick_options = MappingProxyType({"n_masks": 8})

    modalities = ("image",)
    pixel_maps = True
    reads_explained_block = False  # masks the pixels, reads only the scores

    def __init__(
        self,
        forward_func: SimilarityWrapper,
        *,
        n_masks: int = 4000,
        grid: int = 7,
        p: float = 0.5,
        masks: Tensor | None = None,
        baseline: float | Tensor = 0.0,
        batch_size: int = 256,
        seed: int = 0,
    ) -> None:
        super().__init__(forward_func)
        for name, value in (("n_masks", n_masks), ("grid", grid), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive int; got {value!r}")
        if not 0 < p <= 1:
            raise ValueError(f"`p` must be in (0, 1]; got {p!r}")
        if masks is not None:
            if not isinstance(masks, Tensor) or masks.dim() not in (3, 4) or (masks.dim() == 4 and masks.shape[1] != 1):
                raise ValueError(f"`masks` must be a (n, H, W) or (n, 1, H, W) tensor; got {masks!r}")
            masks = masks.reshape(masks.shape[0], *masks.shape[-2:]).float()
            if masks.shape[0] == 0 or masks.mean() <= 0:
                raise ValueError("`masks` must hold at least one mask and keep some pixels")
        self.n_masks, self.grid, self.p = n_masks, grid, float(p)
        self.masks, self.baseline, self.batch_size, self.seed = masks, baseline, batch_size, seed

    def _mask_blocks(self, size: tuple[int, int], block: int, device: torch.device) -> Iterator[Tensor]:
        if self.masks is not None:
            if tuple(self.masks.shape[-2:]) != size:
                raise ValueError(f"`masks` must match the input size {size}; got {tuple(self.masks.shape[-2:])}")
            yield from self.masks.to(device).split(block)
            return
        generator = torch.Generator(device=device).manual_seed(self.seed)
        for start in range(0, self.n_masks, _DRAW):  # drawn in fixed chunks: the same masks for any batch size
            drawn = rise_masks(min(_DRAW, self.n_masks - start), size, self.grid, self.p, generator)
            yield from drawn.split(block)

    def _maps(self, inputs: Tensor, extra: tuple, columns: Tensor, ctx: ExplainContext) -> Tensor:
        sim = self.similarity
        n, _, h, w = inputs.shape
        per_batch = min(n, self.batch_size)  # images per forward pass
        block = max(1, self.batch_size // per_batch)  # masks per forward pass
        baseline = torch.as_tensor(self.baseline, dtype=inputs.dtype, device=inputs.device)
        baseline = baseline.reshape(-1, 1, 1) if baseline.dim() == 1 else baseline
        saliency = torch.zeros(n, columns.shape[0], h, w, dtype=inputs.dtype, device=inputs.device)
        total, count = 0.0, 0
        with torch.no_grad():
            for masks in self._mask_blocks((h, w), block, inputs.device):
                m = masks[None, :, None].to(inputs.dtype)  # (1, b, 1, H, W)
                for start in range(0, n, per_batch):
                    x = inputs[start : start + per_batch, None]
                    batch = x * m + baseline * (1 - m)
                    scores = sim(batch.flatten(0, 1)).reshape(x.shape[0], masks.shape[0], -1)
                    picked = scores.gather(2, columns.T[start : start + per_batch, None, :].expand(-1, m.shape[1], -1))
                    saliency[start : start + per_batch] += torch.einsum("ibk,bhw->ikhw", picked, masks.to(scores))
                total += float(masks.sum())
                count += masks.shape[0]
        mean_mask = total / (count * h * w) if self.masks is not None else self.p
        return saliency / (count * mean_mask)
