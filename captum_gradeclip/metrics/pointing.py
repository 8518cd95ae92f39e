"""Localisation: the pointing game and the energy-based pointing game, for masks or boxes."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from captum_gradeclip.metrics._common import pixel_maps


def boxes_to_masks(boxes: Tensor | Sequence[Tensor], size: tuple[int, int]) -> Tensor:
    """Boolean masks ``(N, H, W)`` of boxes ``(x0, y0, x1, y1)`` in pixels (x1, y1 exclusive).

    Args:
        boxes (Tensor or list[Tensor]): ``(N, 4)`` one box per image, ``(N, B, 4)``, or a
            list of ``(B_i, 4)``; several boxes of one image are united.
        size (tuple[int, int]): ``(H, W)`` of the image.

    A pixel belongs to a box when its centre does.

    Examples::

        >>> boxes_to_masks(torch.tensor([[1, 0, 3, 2]]), size=(3, 4)).int()
        tensor([[[0, 1, 1, 0],
                 [0, 1, 1, 0],
                 [0, 0, 0, 0]]], dtype=torch.int32)
    """
    per_image = list(boxes) if not isinstance(boxes, Tensor) else [b.reshape(-1, 4) for b in boxes]
    h, w = size
    ys = torch.arange(h, dtype=torch.float32) + 0.5
    xs = torch.arange(w, dtype=torch.float32) + 0.5
    masks = torch.zeros(len(per_image), h, w, dtype=torch.bool)
    for i, b in enumerate(per_image):  # a handful of boxes per image; the masks themselves are vectorised
        b = torch.as_tensor(b, dtype=torch.float32).reshape(-1, 4)
        inside_y = (ys[None, :] >= b[:, 1:2]) & (ys[None, :] <= b[:, 3:4])  # (B, H)
        inside_x = (xs[None, :] >= b[:, 0:1]) & (xs[None, :] <= b[:, 2:3])  # (B, W)
        masks[i] = (inside_y[:, :, None] & inside_x[:, None, :]).any(0)
    return masks


def _regions(
    masks: Tensor | None, boxes: Tensor | Sequence[Tensor] | None, image_size: tuple[int, int] | None
) -> Tensor:
    if (masks is None) == (boxes is None):
        raise ValueError("give exactly one of `masks` and `boxes`")
    if masks is not None:
        if not isinstance(masks, Tensor) or masks.dim() not in (3, 4) or (masks.dim() == 4 and masks.shape[1] != 1):
            raise ValueError(f"`masks` must be a (N, H, W) or (N, 1, H, W) tensor; got {masks!r}")
        return masks.reshape(masks.shape[0], *masks.shape[-2:]).bool()
    if image_size is None:
        raise ValueError("`image_size` (H, W) is required with `boxes`")
    return boxes_to_masks(boxes, image_size)  # type: ignore[arg-type]  # masks is None here, so boxes is not


def _maps_for(attributions: Tensor | tuple[Tensor, ...], regions: Tensor, interpolate_mode: str) -> Tensor:
    maps = pixel_maps(attributions, tuple(regions.shape[-2:]), interpolate_mode=interpolate_mode)
    if maps.shape[0] != regions.shape[0]:
        raise ValueError(
            f"`attributions` and the masks/boxes must have the same N; got {maps.shape[0]} and {regions.shape[0]}"
        )
    return maps


def pointing_game(
    attributions: Tensor | tuple[Tensor, ...],
    masks: Tensor | None = None,
    boxes: Tensor | Sequence[Tensor] | None = None,
    *,
    image_size: tuple[int, int] | None = None,
    tolerance: float = 0.0,
    interpolate_mode: str = "bilinear",
) -> Tensor:
    r"""Pointing game (Zhang et al., 2016): a hit when the map's maximum falls on the object.

    The map is upsampled to the mask size (or ``image_size`` for boxes) with
    :meth:`captum.attr.LayerAttribution.interpolate`; its first maximum is a hit when
    some object pixel lies within ``tolerance`` pixels (Euclidean) of it.

    Args:
        attributions (Tensor or tuple[Tensor]): any Captum image attribution, one map per
            example (``(N, 1, h, w)``, ``(N, h, w)``).
        masks (Tensor, optional): ``(N, H, W)`` object masks.
        boxes (Tensor or list[Tensor], optional): boxes instead, see :func:`boxes_to_masks`.
        image_size (tuple[int, int], optional): ``(H, W)``, required with ``boxes``.
        tolerance (float, optional): in pixels; the original protocol uses 15. Default: 0.
        interpolate_mode (str, optional): Default: ``"bilinear"``.

    Returns:
        *Tensor* ``(N,)`` of 1.0 (hit) and 0.0 (miss).

    Examples::

        >>> pointing_game(maps, boxes=torch.tensor([scene.boxes[0]]), image_size=(64, 64), tolerance=15)
        tensor([1.])
    """
    if not isinstance(tolerance, (int, float)) or isinstance(tolerance, bool) or tolerance < 0:
        raise ValueError(f"`tolerance` must be a non-negative number of pixels; got {tolerance!r}")
    regions = _regions(masks, boxes, image_size)
    maps = _maps_for(attributions, regions, interpolate_mode)
    n, h, w = maps.shape
    peak = maps.reshape(n, -1).argmax(-1)
    py, px = (peak // w).float(), (peak % w).float()
    ys = torch.arange(h, dtype=torch.float32, device=maps.device)[None, :, None]
    xs = torch.arange(w, dtype=torch.float32, device=maps.device)[None, None, :]
    near = (ys - py[:, None, None]) ** 2 + (xs - px[:, None, None]) ** 2 <= tolerance**2
    return (near & regions.to(maps.device)).flatten(1).any(1).float()


def energy_pointing_game(
    attributions: Tensor | tuple[Tensor, ...],
    masks: Tensor | None = None,
    boxes: Tensor | Sequence[Tensor] | None = None,
    *,
    image_size: tuple[int, int] | None = None,
    interpolate_mode: str = "bilinear",
) -> Tensor:
    r"""Energy-based pointing game (Wang et al., 2020): the share of the map's positive mass on the object.

    .. math:: \frac{\sum_{p \in \text{object}} \max(H_p, 0)}{\sum_p \max(H_p, 0)}

    on the map upsampled to the mask size; 0 for a map without positive mass.

    Args:
        attributions, masks, boxes, image_size, interpolate_mode: as in :func:`pointing_game`.

    Returns:
        *Tensor* ``(N,)`` in [0, 1].

    Examples::

        >>> energy = energy_pointing_game(maps, masks=torch.from_numpy(scene.masks[:1]))
        >>> energy.shape, bool(0 <= energy <= 1)
        (torch.Size([1]), True)
    """
    regions = _regions(masks, boxes, image_size)
    positive = _maps_for(attributions, regions, interpolate_mode).clamp_min(0)
    total = positive.flatten(1).sum(1)
    inside = (positive * regions.to(positive)).flatten(1).sum(1)
    return torch.where(total > 0, inside / total.clamp_min(torch.finfo(total.dtype).tiny), torch.zeros_like(total))
