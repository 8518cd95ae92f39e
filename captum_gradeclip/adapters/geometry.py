"""The preprocessing geometry of a loader: where the model's input came from in the user's original image.

A processor resizes the original image (to a shortest side, or squashed to a fixed size, or to fit inside a
box), then centre-crops it, or pads it where the resized image is smaller than the input. :class:`Geometry`
records those steps for one original size, read from the processor's own configuration by
:func:`read_geometry`: a transformers image processor's ``size``, ``crop_size`` and ``do_center_crop``, or the
``Resize``, ``CenterCrop`` and open_clip ``ResizeKeepRatio`` / ``CenterCropOrPad`` steps of a torchvision
``Compose`` (open_clip, OpenAI ``clip``). :meth:`Geometry.to_original` maps a map on the model's grid back onto
the original image and marks what the model never saw (cropped away) with NaN.
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

#: torchvision / open_clip / OpenAI steps that do not move pixels.
_NO_GEOMETRY = (
    "ToTensor",
    "PILToTensor",
    "MaybeToTensor",
    "ConvertImageDtype",
    "Normalize",
    "MaybeConvertMode",
    "_convert_image_to_rgb",
    "ToImage",
    "ToDtype",
)


@dataclass(frozen=True)
class Geometry:
    """How one original image became the model's input.

    Attributes:
        original: ``(H, W)`` of the original image.
        resized: ``(h, w)`` after the processor's resize.
        offset: ``(top, left)`` of the model's input in the resized image; negative where the processor padded.
        input: ``(h, w)`` of the model's input.

    Examples::

        >>> from captum_gradeclip.adapters.geometry import Geometry
        >>> g = Geometry(original=(100, 200), resized=(64, 128), offset=(0, 32), input=(64, 64))
        >>> g.seen_box()  # (top, left, bottom, right) of the original that the model saw
        (0, 50, 100, 150)
    """

    original: tuple[int, int]
    resized: tuple[int, int]
    offset: tuple[int, int]
    input: tuple[int, int]

    def input_coordinates(self) -> tuple[Tensor, Tensor]:
        """For each original row and column centre, its coordinate in the model's input, in input pixels.

        Returns:
            *(Tensor, Tensor)*: ``(H,)`` and ``(W,)``; a coordinate outside ``[0, input)`` was not seen.
        """
        coords = []
        for axis in range(2):
            centres = torch.arange(self.original[axis], dtype=torch.float64) + 0.5
            coords.append(centres * self.resized[axis] / self.original[axis] - self.offset[axis])
        return coords[0], coords[1]

    def seen(self) -> Tensor:
        """``(H, W)`` bool: the original pixels that the model saw."""
        ys, xs = self.input_coordinates()
        rows = (ys >= 0) & (ys < self.input[0])
        cols = (xs >= 0) & (xs < self.input[1])
        return rows[:, None] & cols[None, :]

    def seen_box(self) -> tuple[int, int, int, int]:
        """``(top, left, bottom, right)`` of the seen part of the original (bottom and right exclusive)."""
        ys, xs = self.input_coordinates()
        rows = torch.nonzero((ys >= 0) & (ys < self.input[0]))[:, 0]
        cols = torch.nonzero((xs >= 0) & (xs < self.input[1]))[:, 0]
        return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1

    def to_original(self, maps: Tensor, mode: str = "bilinear") -> Tensor:
        """Maps on the model's grid -> the same maps on the original image, NaN where the model saw nothing.

        Args:
            maps (Tensor): ``(..., h, w)`` maps on any grid that covers the model's input (a patch grid, or the
                input's own pixels).
            mode (str, optional): ``"bilinear"`` (smooth, cell centres interpolated) or ``"nearest"`` (each
                original pixel takes its cell's value). Default: ``"bilinear"``.

        Returns:
            *Tensor* ``(..., H, W)`` float32.
        """
        if mode not in ("bilinear", "nearest"):
            raise ValueError(f"`mode` must be 'bilinear' or 'nearest'; got {mode!r}")
        if not isinstance(maps, Tensor) or maps.dim() < 2:
            raise ValueError(f"`maps` must be a tensor of shape (..., h, w); got {_describe(maps)}")
        lead, grid = maps.shape[:-2], maps.shape[-2:]
        flat = maps.detach().float().cpu().reshape(-1, 1, *grid)
        ys, xs = self.input_coordinates()
        # grid_sample's align_corners=False: -1 and 1 are the outer edges of the grid, as of the input.
        gy = (2 * ys / self.input[0] - 1).float()
        gx = (2 * xs / self.input[1] - 1).float()
        if mode == "nearest":  # the cell's centre, so that rounding never crosses a cell edge
            gy = _cell_centres(gy, grid[0])
            gx = _cell_centres(gx, grid[1])
        sample = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), dim=-1)  # (H, W, 2) as (x, y)
        sample = sample.expand(flat.shape[0], *sample.shape)
        out = F.grid_sample(flat, sample, mode=mode, padding_mode="border", align_corners=False)
        out = out.masked_fill(~self.seen(), float("nan"))
        return out.reshape(*lead, *self.original)


def _cell_centres(normalised: Tensor, cells: int) -> Tensor:
    index = ((normalised + 1) / 2 * cells).floor().clamp(0, cells - 1)
    return (2 * index + 1) / cells - 1


def _describe(x: object) -> str:
    shape = getattr(x, "shape", None)
    return f"{type(x).__name__} of shape {tuple(shape)}" if shape is not None else type(x).__name__


def _size_pair(value: Any) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    values = list(value)
    return (int(values[0]), int(values[0])) if len(values) == 1 else (int(values[0]), int(values[1]))


def _shortest_side(size: tuple[int, int], short: int, max_size: int | None = None) -> tuple[int, int]:
    """torchvision's and transformers' rule: the short side becomes ``short``, the long one ``int(short*long/s)``."""
    h, w = size
    small, large = min(h, w), max(h, w)
    new_small, new_large = short, int(short * large / small)
    if max_size is not None and new_large > max_size:
        new_small, new_large = int(max_size * new_small / new_large), max_size
    return (new_small, new_large) if h <= w else (new_large, new_small)


def _crop_offset(size: tuple[int, int], crop: tuple[int, int], rounding: str) -> tuple[int, int]:
    """The crop's (top, left) in the resized image; negative: padding (torchvision's pad-then-crop rule)."""
    offset = []
    for have, want in zip(size, crop, strict=True):
        pad = (want - have) // 2 if want > have else 0
        padded = max(have, want)
        start = (padded - want) / 2.0
        offset.append((round(start) if rounding == "round" else int(start)) - pad)
    return offset[0], offset[1]


def read_geometry(processor: Any, size: tuple[int, int]) -> Geometry:
    """The geometry of ``processor`` on an original image of ``size`` ``(H, W)``, from its own configuration.

    Args:
        processor (object): a transformers processor or image processor (``size``, ``crop_size``,
            ``do_center_crop``, ``do_resize``), the ResNet ShapesCLIP's processor (``image_size``), or a
            torchvision ``Compose`` (open_clip's and OpenAI ``clip``'s preprocess).
        size (tuple[int, int]): ``(H, W)`` of the original image.

    Returns:
        *Geometry*.

    Raises:
        ValueError: for a processor whose geometry cannot be read (an unknown step, padding to a multiple, ...);
            the message names it.

    Examples::

        >>> from captum_gradeclip.adapters.geometry import read_geometry
        >>> read_geometry(processor, (96, 128))  # ShapesCLIP: shortest side to 64, then a 64x64 centre crop
        Geometry(original=(96, 128), resized=(64, 85), offset=(0, 10), input=(64, 64))
    """
    h, w = int(size[0]), int(size[1])
    if h < 1 or w < 1:
        raise ValueError(f"`size` must be a positive (H, W); got {size}")
    image_processor = getattr(processor, "image_processor", processor)
    if hasattr(image_processor, "transforms"):
        return _compose_geometry(image_processor.transforms, (h, w))
    if hasattr(image_processor, "do_resize") and hasattr(image_processor, "size"):
        return _hf_geometry(image_processor, (h, w))
    if isinstance(getattr(image_processor, "image_size", None), int):  # ShapesProcessor: squashed
        side = int(image_processor.image_size)
        return Geometry((h, w), (side, side), (0, 0), (side, side))
    raise ValueError(
        f"cannot read the preprocessing geometry of {type(processor).__name__}: expected a transformers "
        "image processor (size, crop_size) or a torchvision Compose of Resize / CenterCrop"
    )


def _field(size: Any, name: str) -> int | None:
    value = size.get(name) if isinstance(size, dict) else getattr(size, name, None)
    return None if value is None else int(value)


def _hf_geometry(image_processor: Any, size: tuple[int, int]) -> Geometry:
    name = type(image_processor).__name__
    if getattr(image_processor, "do_pad", False):
        raise ValueError(f"cannot read the preprocessing geometry of {name}: it pads (do_pad=True)")
    resized = size
    if getattr(image_processor, "do_resize", False):
        target = image_processor.size
        short, height, width = _field(target, "shortest_edge"), _field(target, "height"), _field(target, "width")
        if short is not None and _field(target, "longest_edge") is None:
            resized = _shortest_side(size, short)
        elif height is not None and width is not None:
            resized = (height, width)
        else:
            raise ValueError(f"cannot read the preprocessing geometry of {name}: its size {target} is not "
                             "a shortest_edge or a height and width")  # fmt: skip
    crop, offset = resized, (0, 0)
    if getattr(image_processor, "do_center_crop", False):
        crop_size = image_processor.crop_size
        crop = (_field(crop_size, "height") or 0, _field(crop_size, "width") or 0)
        if min(crop) < 1:
            raise ValueError(f"cannot read the preprocessing geometry of {name}: its crop_size {crop_size}")
        offset = _crop_offset(resized, crop, "floor")
    return Geometry(size, resized, offset, crop)


def _compose_geometry(steps: list[Any], size: tuple[int, int]) -> Geometry:
    resized, offset, current = size, (0, 0), size
    for step in steps:
        kind = step.__name__ if isinstance(step, types.FunctionType) else type(step).__name__
        if kind in _NO_GEOMETRY:
            continue
        if offset != (0, 0) or current != resized:
            raise ValueError(f"cannot read the preprocessing geometry: {kind} after a crop")
        if kind == "Resize":
            target = step.size
            if isinstance(target, int) or len(target) == 1:
                resized = _shortest_side(current, _size_pair(target)[0], step.max_size)
            else:
                resized = _size_pair(target)
            current = resized
        elif kind == "ResizeKeepRatio":  # open_clip: fit the box, at `longest` between the longest and shortest side
            target_h, target_w = _size_pair(step.size)
            longest = float(step.longest)
            ratio_h, ratio_w = current[0] / target_h, current[1] / target_w
            ratio = max(ratio_h, ratio_w) * longest + min(ratio_h, ratio_w) * (1.0 - longest)
            resized = (round(current[0] / ratio), round(current[1] / ratio))
            current = resized
        elif kind in ("CenterCrop", "CenterCropOrPad"):
            crop = _size_pair(step.size)
            offset = _crop_offset(resized, crop, "round")
            current = crop
        else:
            raise ValueError(
                f"cannot read the preprocessing geometry: unknown step {kind} (expected Resize, CenterCrop, "
                "open_clip's ResizeKeepRatio or CenterCropOrPad, and steps that do not move pixels)"
            )
    return Geometry(size, resized, offset, current)
