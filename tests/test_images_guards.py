"""The image reader's guards at their edges: a link loop inside ``--images`` is a refusal that names the file
and why, and deep integer and float images land in their real range (the mutation run's survivors)."""

from __future__ import annotations

import errno
import os
import warnings

import numpy as np
import pytest
from PIL import Image

from captum_gradeclip.images import ImageError, load_image


def grey(tmp_path, values, mode: str) -> list[int]:
    """The grey levels ``load_image`` gives a one-row TIFF of ``values`` in PIL mode ``mode``."""
    dtype = np.float32 if mode == "F" else np.int32
    Image.fromarray(np.array([values], dtype=dtype), mode=mode).save(tmp_path / "deep.tiff")
    rgb = np.asarray(load_image("deep.tiff", root=tmp_path))
    assert rgb.shape == (1, len(values), 3) and (rgb == rgb[..., :1]).all()
    return rgb[0, :, 0].tolist()


def test_a_link_loop_inside_the_folder_is_a_bad_path_naming_the_file_and_the_reason(tmp_path):
    (tmp_path / "loop.png").symlink_to(tmp_path / "loop.png")
    with pytest.raises(ImageError) as info:
        load_image("loop.png", root=tmp_path)
    error = info.value
    assert (error.reason, error.name) == ("bad path", "loop.png")
    reason = str(error).removeprefix("bad path: loop.png (").removesuffix(")")
    assert str(error) == f"bad path: loop.png ({reason})"
    assert reason in ("RuntimeError", os.strerror(errno.ELOOP))  # Python 3.11-3.12 / 3.13: the loop, not a guess


def test_32_bit_integer_images_are_scaled_by_16_bits_or_else_by_their_own_range(tmp_path):
    assert grey(tmp_path, [0, 1000, 32768, 65535], "I") == [0, 4, 128, 255]  # within 16 bits: divided by 65535
    assert grey(tmp_path, [1000, 32768, 51529], "I") == [4, 128, 201]  # by 65535 (65536: 200), not their range
    assert grey(tmp_path, [1000, 65535], "I") == [4, 255]  # the top of 16 bits is inside
    assert grey(tmp_path, [0, 32768], "I") == [0, 128]  # and so is 0
    assert grey(tmp_path, [1000, 65536], "I") == [0, 255]  # one past 16 bits: their own range
    assert grey(tmp_path, [0, 70000, 140000], "I") == [0, 128, 255]  # beyond 16 bits: their own range
    assert grey(tmp_path, [-100, 0, 100], "I") == [0, 128, 255]  # negative: their own range


def test_float_images_keep_values_in_0_1_and_rescale_any_other_range(tmp_path):
    assert grey(tmp_path, [0.2, 0.6], "F") == [51, 153]  # inside [0, 1]: as they are
    assert grey(tmp_path, [0.0, 0.5], "F") == [0, 128]  # touching 0
    assert grey(tmp_path, [0.5, 1.0], "F") == [128, 255]  # touching 1
    assert grey(tmp_path, [-0.5, 0.5], "F") == [0, 255]  # negative, maximum below 1: its own range
    assert grey(tmp_path, [0.5, 1.5], "F") == [0, 255]  # above 1 (but below 2): its own range


@pytest.mark.parametrize(("values", "mode"), [([5.0, 5.0], "F"), ([-3.0, -3.0], "F"), ([70000, 70000], "I")])
def test_a_constant_image_outside_the_range_is_black_without_a_warning(tmp_path, values, mode):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no division by zero on the way
        assert grey(tmp_path, values, mode) == [0, 0]


def test_non_finite_float_images_are_corrupt(tmp_path):
    Image.fromarray(np.array([[0.0, np.nan]], dtype=np.float32), mode="F").save(tmp_path / "nan.tiff")
    with pytest.raises(ImageError, match=r"^corrupt image: nan\.tiff \(ValueError\)$"):
        load_image("nan.tiff", root=tmp_path)
