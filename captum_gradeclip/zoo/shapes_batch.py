"""Batches of shapes-world scenes rendered with torch, on the training device.

The same world and the same distribution as :func:`shapes.render`, drawn for a whole batch at once:
the scene's categories (object count, ``(colour, shape)`` pairs, caption order) come from a numpy
generator on the host, as small integer arrays; boxes, masks and pixels are drawn with a
``torch.Generator`` on ``device``. What differs from :func:`shapes.render` is only how the random
numbers are drawn, not their distribution:

- a box is the first of a batch of candidate boxes that keeps 2 pixels from the boxes already
  placed (:func:`shapes.render` tries one box after another: the same rejection sampling);
- the per-pixel noise of an object's pixels is drawn once for the whole image (:func:`shapes.render`
  draws the background's noise, then the object's afresh over it).

Given the same boxes and shapes the masks are exactly those of :func:`shapes.render`, and given the
same coarse blotches the background is the same bilinear upsampling.

Examples::

    >>> import numpy as np, torch
    >>> from captum_gradeclip.zoo import shapes_batch
    >>> pairs = shapes_batch.sample_pairs(np.array([1, 2, 3]), np.random.default_rng(0))
    >>> batch = shapes_batch.render_batch(pairs, torch.Generator().manual_seed(0))
    >>> batch.images.shape, batch.images.dtype, batch.masks().shape
    (torch.Size([3, 3, 64, 64]), torch.uint8, torch.Size([3, 3, 64, 64]))
    >>> batch.pairs[0].tolist()[1:], batch.boxes[0, 1:].tolist()  # one object: the other slots are -1
    ([-1, -1], [[-1, -1, -1, -1], [-1, -1, -1, -1]])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from captum_gradeclip.zoo import shapes

#: Candidate boxes drawn per object; the last :data:`SMALLEST` of them have the smallest size: the
#: attempts of :func:`shapes.render`, which tries 200 random sizes, then 200 of the smallest.
CANDIDATES = 400
SMALLEST = 200
#: RGB of every colour, in :data:`shapes.COLOURS` order.
PALETTE = torch.tensor(list(shapes.COLOURS.values()), dtype=torch.float32)


@dataclass(frozen=True)
class SceneBatch:
    """A rendered batch.

    Attributes:
        images (Tensor): ``(B, 3, H, W)`` uint8.
        counts (Tensor): ``(B,)`` the number of objects, 1 to :data:`shapes.MAX_OBJECTS`.
        pairs (Tensor): ``(B, MAX_OBJECTS)`` ``colour * len(SHAPES) + shape`` of each object, in
            caption order (the index of its prompt in :func:`shapes.all_prompts`); -1 past ``counts``.
        boxes (Tensor): ``(B, MAX_OBJECTS, 4)`` ``(x0, y0, x1, y1)``, end-exclusive; -1 past ``counts``.
    """

    images: Tensor
    counts: Tensor
    pairs: Tensor
    boxes: Tensor

    def masks(self) -> Tensor:
        """``(B, MAX_OBJECTS, H, W)`` bool masks of the objects (all False past ``counts``)."""
        return (
            shape_masks(self.pairs % len(shapes.SHAPES), self.boxes, self.images.shape[-1])
            & (self.pairs >= 0)[..., None, None]
        )


def sample_pairs(counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``(B, MAX_OBJECTS)`` distinct ``(colour, shape)`` pair indices in random order, -1 past ``counts``.

    Each row is a uniformly random ordered choice without replacement, as :func:`shapes.render`'s.
    """
    counts = np.asarray(counts)
    if counts.ndim != 1 or counts.min(initial=1) < 1 or counts.max(initial=1) > shapes.MAX_OBJECTS:
        raise ValueError(f"`counts` must be a 1-d array of ints in 1..{shapes.MAX_OBJECTS}; got {counts!r}")
    n_pairs = len(shapes.COLOURS) * len(shapes.SHAPES)
    order = rng.random((len(counts), n_pairs)).argsort(axis=1)[:, : shapes.MAX_OBJECTS]
    return np.where(np.arange(shapes.MAX_OBJECTS) < counts[:, None], order, -1)


def shape_masks(shape: Tensor, boxes: Tensor, image_size: int) -> Tensor:
    """``(..., H, W)`` bool masks of shapes (indices into :data:`shapes.SHAPES`) drawn in square boxes.

    The formulas of :func:`shapes.render`, in float64 so that pixels on a shape's edge fall the same way.

    Args:
        shape (Tensor): ``(...)`` shape indices.
        boxes (Tensor): ``(..., 4)`` square boxes ``(x0, y0, x1, y1)``, end-exclusive.
        image_size (int): the image side ``H = W``.
    """
    grid = torch.arange(image_size, device=boxes.device, dtype=torch.float64)
    x0, y0 = boxes[..., 0, None, None].double(), boxes[..., 1, None, None].double()
    size = (boxes[..., 2] - boxes[..., 0])[..., None, None]
    yy, xx = grid[:, None] - y0, grid[None, :] - x0
    side = size.double()
    inside = (yy >= 0) & (yy < side) & (xx >= 0) & (xx < side)
    c = (side - 1) / 2
    arm = torch.clamp(size // 3, min=2)
    lo = ((size - arm) // 2).double()
    arm = arm.double()
    masks = torch.stack(
        [
            (yy - c) ** 2 + (xx - c) ** 2 <= (side / 2) ** 2,  # circle
            torch.ones_like(inside),  # square
            (xx - c).abs() <= (yy + 1) / side * side / 2,  # triangle, apex up
            ((yy >= lo) & (yy < lo + arm)) | ((xx >= lo) & (xx < lo + arm)),  # cross
        ]
    )
    index = shape.clamp(min=0)[None, ..., None, None].expand(1, *inside.shape)
    return inside & masks.gather(0, index)[0]


def place_boxes(counts: Tensor, image_size: int, generator: torch.Generator) -> Tensor:
    """``(B, MAX_OBJECTS, 4)`` square boxes, 2 pixels apart, of side ``round(0.25 S)..round(0.41 S)``.

    Rows past ``counts`` are -1.
    """
    device, batch = counts.device, counts.shape[0]
    lo, hi = round(0.25 * image_size), round(0.41 * image_size)
    boxes = torch.full((batch, shapes.MAX_OBJECTS, 4), -1, dtype=torch.long, device=device)
    for k in range(shapes.MAX_OBJECTS):
        size = torch.randint(lo, hi + 1, (batch, CANDIDATES), generator=generator, device=device)
        size[:, CANDIDATES - SMALLEST :] = lo
        x0 = 1 + (torch.rand(batch, CANDIDATES, generator=generator, device=device) * (image_size - size - 1)).long()
        y0 = 1 + (torch.rand(batch, CANDIDATES, generator=generator, device=device) * (image_size - size - 1)).long()
        x1, y1 = x0 + size, y0 + size
        free = torch.ones_like(size, dtype=torch.bool)
        for j in range(k):
            b = boxes[:, j, :, None]
            free &= (x0 >= b[:, 2] + 2) | (b[:, 0] >= x1 + 2) | (y0 >= b[:, 3] + 2) | (b[:, 1] >= y1 + 2)
        if not bool((free.any(dim=1) | (counts <= k)).all()):
            raise RuntimeError(f"no room for another object in a {image_size}-pixel image")  # pragma: no cover
        first = free.to(torch.uint8).argmax(dim=1, keepdim=True)  # the first free candidate
        chosen = torch.stack([x0, y0, x1, y1], dim=-1).gather(1, first[..., None].expand(-1, 1, 4))[:, 0]
        boxes[:, k] = torch.where((counts > k)[:, None], chosen, boxes[:, k])
    return boxes


def render_batch(
    pairs: np.ndarray | Tensor,
    generator: torch.Generator,
    image_size: int = shapes.IMAGE_SIZE,
    noise: float = 0.02,
) -> SceneBatch:
    """Draws one scene per row of ``pairs`` on ``generator``'s device.

    Args:
        pairs (numpy.ndarray or Tensor): ``(B, MAX_OBJECTS)`` the objects of each scene, in caption
            order, as :func:`sample_pairs` draws them (``colour * len(SHAPES) + shape``, then -1).
        generator (torch.Generator): draws boxes and pixels, on its device.
        image_size (int, optional): the side in pixels, at least 32. Default: 64.
        noise (float, optional): the per-pixel noise's standard deviation. Default: 0.02.

    Returns:
        *SceneBatch* on ``generator.device``.
    """
    if image_size < 32:
        raise ValueError(f"`image_size` must be at least 32; got {image_size}")
    device = generator.device
    pairs = torch.as_tensor(pairs, device=device).long()
    if pairs.dim() != 2 or pairs.shape[1] != shapes.MAX_OBJECTS or not bool((pairs[:, 0] >= 0).all()):
        raise ValueError(f"`pairs` must be (B, {shapes.MAX_OBJECTS}) with an object in every first column")
    counts = (pairs >= 0).sum(dim=1)
    batch = counts.shape[0]
    boxes = place_boxes(counts, image_size, generator)
    masks = shape_masks(pairs % len(shapes.SHAPES), boxes, image_size) & (pairs >= 0)[..., None, None]

    def normal(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=generator, device=device)

    grey = 0.3 + 0.25 * torch.rand(batch, 1, 1, 1, generator=generator, device=device)
    coarse = 0.06 * normal(batch, 1, 4, 4)  # low-frequency blotches
    image = (grey + blotches(coarse, image_size)).expand(batch, 3, image_size, image_size)
    tint = PALETTE.to(device)[pairs.clamp(min=0) // len(shapes.SHAPES)] + 0.04 * normal(batch, shapes.MAX_OBJECTS, 3)
    tint = tint.clamp(0.0, 1.0)
    for k in range(shapes.MAX_OBJECTS):
        image = torch.where(masks[:, k, None], tint[:, k, :, None, None], image)
    image = image + noise * normal(batch, 3, image_size, image_size)
    images = (image.clamp(0.0, 1.0) * 255 + 0.5).to(torch.uint8)
    return SceneBatch(images, counts, pairs, boxes)


def blotches(coarse: Tensor, image_size: int) -> Tensor:
    """``(B, 1, 4, 4)`` coarse noise upsampled bilinearly to ``(B, 1, S, S)``, as PIL's ``resize`` does."""
    return F.interpolate(coarse, size=(image_size, image_size), mode="bilinear", align_corners=False)
