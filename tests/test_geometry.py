"""The inverse preprocessing geometry, checked against each loader's real processor.

The oracle: an image whose pixels encode their own coordinates (red = column + 10, green = row + 10, blue = 255,
so that padding reads blue 0) goes through the real processor; un-normalised, each pixel of the model's input
says which original pixel it came from. A one-hot map on each grid cell must land on the original pixels that
the cell's input pixels came from, and what no input pixel came from must be NaN.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import captum_gradeclip as cg
from captum_gradeclip.adapters.geometry import Geometry, read_geometry
from captum_gradeclip.adapters.processing import BPEProcessing, HFProcessing

SIDE, GRID = 48, 4
#: (H, W): portrait, landscape, 16:9.
SIZES = {"portrait": (200, 120), "landscape": (120, 200), "16:9": (135, 240)}


def _hf(kind: str) -> object:
    from transformers import CLIPImageProcessor, SiglipImageProcessor

    if kind == "hf-clip":  # shortest side 56, then a 48x48 centre crop
        return CLIPImageProcessor(size={"shortest_edge": 56}, crop_size={"height": SIDE, "width": SIDE})
    if kind == "hf-clip-pad":  # shortest side 40 < the 48 crop: padded
        return CLIPImageProcessor(size={"shortest_edge": 40}, crop_size={"height": SIDE, "width": SIDE})
    return SiglipImageProcessor(size={"height": SIDE, "width": SIDE})  # squashed


def _torchvision(kind: str) -> object:
    if kind == "openai":
        clip = pytest.importorskip("clip.clip")
        return clip._transform(SIDE)
    open_clip = pytest.importorskip("open_clip")
    mode = {"open_clip": "shortest", "open_clip-longest": "longest", "open_clip-squash": "squash"}[kind]
    return open_clip.image_transform(SIDE, is_train=False, resize_mode=mode)


PROCESSORS = ["hf-clip", "hf-clip-pad", "siglip", "open_clip", "open_clip-longest", "open_clip-squash", "openai"]


def processing_of(kind: str) -> object:
    if kind.startswith(("hf", "siglip")):
        return HFProcessing(_hf(kind))
    return BPEProcessing(_torchvision(kind), encode=lambda texts: None)


def coordinate_image(h: int, w: int) -> Image.Image:
    assert max(h, w) + 10 <= 255
    ys, xs = np.mgrid[0:h, 0:w]
    rgb = np.stack([xs + 10, ys + 10, np.full_like(xs, 255)], axis=-1).astype(np.uint8)
    return Image.fromarray(rgb)


def read_back(processing: object, image: Image.Image) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each input pixel: the original (row, column) it came from, and whether it is image (not padding)."""
    seen = processing.seen_image(processing.pixels(image)) * 255  # (S, S, 3)
    return seen[..., 1] - 10, seen[..., 0] - 10, seen[..., 2] > 128


@pytest.mark.parametrize("kind", PROCESSORS)
@pytest.mark.parametrize("shape", list(SIZES))
def test_a_cell_lands_on_the_box_it_saw_and_unseen_margins_are_nan(kind, shape):
    h, w = SIZES[shape]
    processing = processing_of(kind)
    image = coordinate_image(h, w)
    rows, cols, real = read_back(processing, image)
    assert rows.shape == (SIDE, SIDE)
    geometry = processing.geometry((h, w))
    scale = max(h / geometry.resized[0], w / geometry.resized[1])
    tol = scale / 2 + 1.5  # half a resized pixel, and the resampling's rounding
    cell = SIDE // GRID
    for i in range(GRID):
        for j in range(GRID):
            onehot = torch.zeros(GRID, GRID)
            onehot[i, j] = 1
            landed = cg.to_original(onehot, image, processing, mode="nearest")
            assert landed.shape == (h, w)
            inside = (landed == 1).nonzero()
            block = (slice(i * cell, (i + 1) * cell), slice(j * cell, (j + 1) * cell))
            mask = real[block]
            if not mask.any():  # a cell of padding only: it saw nothing of the original
                assert len(inside) == 0, f"{kind} {shape}: cell {(i, j)} is padding but landed on the image"
                continue
            want = [rows[block][mask].min(), cols[block][mask].min(), rows[block][mask].max(), cols[block][mask].max()]
            got = [*inside.min(0).values.tolist(), *inside.max(0).values.tolist()]
            assert np.allclose(got, want, atol=tol), f"{kind} {shape}: cell {(i, j)} landed on {got}, saw {want}"
    # The margins: NaN exactly where no input pixel came from.
    heat = cg.to_original(torch.rand(1, 1, GRID, GRID), image, processing)
    assert heat.shape == (1, 1, h, w)
    nan = heat[0, 0].isnan()
    top, left = rows[real].min(), cols[real].min()
    bottom, right = rows[real].max(), cols[real].max()
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    outside = (ys < top - tol) | (ys > bottom + tol) | (xs < left - tol) | (xs > right + tol)
    inside = (ys > top + tol) & (ys < bottom - tol) & (xs > left + tol) & (xs < right - tol)
    assert nan[outside].all(), f"{kind} {shape}: a margin the model never saw is not NaN"
    assert not nan[inside].any(), f"{kind} {shape}: a seen pixel is NaN"
    if kind in ("siglip", "open_clip-squash", "open_clip-longest"):
        assert not nan.any(), f"{kind} keeps the whole image"
    else:
        assert nan.any(), f"{kind} crops a non-square image (hf-clip-pad: pads the short side, crops the long)"


def test_the_embedded_models_geometry_and_the_image_it_saw():
    _model, processor = cg.zoo.load_shapes_clip()
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 160, 3), dtype=np.uint8))
    pixels = processor(images=photo, return_tensors="pt")["pixel_values"]
    seen = cg.seen_image(pixels, processor)
    geometry = read_geometry(processor, (96, 160))
    assert geometry == Geometry(original=(96, 160), resized=(64, 106), offset=(0, 21), input=(64, 64))
    top, left, bottom, right = geometry.seen_box()
    assert (top, bottom) == (0, 96) and right - left == 96
    crop = np.asarray(photo.crop((left, top, right, bottom)).resize((64, 64), Image.BICUBIC)) / 255
    assert seen.shape == (64, 64, 3) and np.abs(seen - crop).mean() < 0.08, "the centre of the photo, as seen"


def test_unreadable_geometry_is_refused_with_the_reason():
    from torchvision import transforms

    with pytest.raises(ValueError, match="cannot read the preprocessing geometry: unknown step RandomCrop"):
        read_geometry(transforms.Compose([transforms.RandomCrop(32), transforms.ToTensor()]), (64, 64))
    with pytest.raises(ValueError, match=r"cannot read the preprocessing geometry of int"):
        read_geometry(7, (64, 64))
    with pytest.raises(ValueError, match=r"`processor` must be the loader's processor"):
        cg.to_original(torch.zeros(2, 2), (8, 8), object())
    with pytest.raises(ValueError, match=r"`mode` must be 'bilinear' or 'nearest'"):
        Geometry((8, 8), (8, 8), (0, 0), (8, 8)).to_original(torch.zeros(2, 2), mode="cubic")
    with pytest.raises(ValueError, match=r"`size` must be a positive"):
        read_geometry(_hf("siglip"), (0, 5))


def test_bilinear_maps_keep_values_in_range_and_agree_with_nearest_on_constant_maps():
    geometry = read_geometry(_hf("hf-clip"), (200, 120))
    constant = torch.full((2, 3, GRID, GRID), 0.25)
    for mode in ("bilinear", "nearest"):
        out = geometry.to_original(constant, mode)
        assert out.shape == (2, 3, 200, 120)
        seen = ~out.isnan()
        assert torch.equal(seen[0, 0], geometry.seen()) and torch.allclose(out[seen], torch.tensor(0.25))
