"""The one image reader: confinement to a folder, pixel budget and bomb guard, real range, EXIF orientation."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from captum_gradeclip.cli import CLIError, read_image
from captum_gradeclip.images import OUTSIDE, ImageError, load_image, printable, resolve_inside


def bomb_png(path: Path, width: int = 20000, height: int = 20000) -> Path:
    """A PNG whose header claims ``width x height`` 8-bit grey pixels, with almost no data (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = zlib.compress(b"\x00" * (width + 1))  # one row only
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


def test_bomb_header_is_refused_not_a_crash(tmp_path):
    bomb = bomb_png(tmp_path / "bomb.png")
    with pytest.raises(ImageError, match=r"^too large: bomb.png") as info:
        load_image("bomb.png", root=tmp_path)
    assert info.value.reason == "too large" and isinstance(info.value, ValueError)  # a library error
    assert not isinstance(info.value, CLIError)
    with pytest.raises(CLIError, match=r"^too large: .*bomb.png"):  # the command line's reader: one line, exit 2
        read_image(bomb)
    # PIL's own guard (error above 2x its limit, warning above it) is also a refusal when no budget is set
    with pytest.raises(ImageError, match="too large"):
        load_image(bomb, max_pixels=None)
    warn = bomb_png(tmp_path / "warn.png", 10000, 10000)  # 1e8 pixels: PIL warns (limit ~8.9e7)
    with pytest.raises(ImageError, match="too large"):
        load_image(warn, max_pixels=None)


def test_the_processed_size_counts_against_the_budget(tmp_path):
    Image.new("RGB", (64000, 1)).save(tmp_path / "thin.png")
    assert load_image(tmp_path / "thin.png").size == (64000, 1)  # 64000 pixels as a file
    with pytest.raises(ImageError, match=r"too large: .*thin.png \(64000x1 pixels, resized to a shorter side of 64: "
                                         r"262144000 pixels > budget of 100000000\)"):  # fmt: skip
        load_image(tmp_path / "thin.png", resize_side=64)
    Image.new("RGB", (30, 10)).save(tmp_path / "wide.png")  # 300 pixels, 64 x 192 once resized
    assert load_image(tmp_path / "wide.png", resize_side=64, max_pixels=64 * 192).size == (30, 10)
    with pytest.raises(ImageError, match=r"resized to a shorter side of 64: 12288 pixels > budget of 12287"):
        load_image(tmp_path / "wide.png", resize_side=64, max_pixels=64 * 192 - 1)


def test_impossible_paths_are_refusals_with_their_reason(tmp_path):
    (tmp_path / "loop.png").symlink_to(tmp_path / "loop.png")
    for name, detail in [("a\0b.png", "a NUL byte"), ("\ud800.png", "a lone surrogate"), ("x" * 256, "name too long"),
                         ("loop.png", "")]:  # fmt: skip
        with pytest.raises(ImageError) as info:
            load_image(name, root=tmp_path)
        assert info.value.reason in ("bad path", "missing image") and detail in str(info.value), name


def test_pixel_budget_is_configurable(tmp_path):
    Image.new("RGB", (30, 20)).save(tmp_path / "a.png")
    assert load_image(tmp_path / "a.png", max_pixels=600).size == (30, 20)
    with pytest.raises(ImageError, match=r"too large: .*30x20 pixels > budget of 599"):
        load_image(tmp_path / "a.png", max_pixels=599)


def test_16_bit_png_is_scaled_by_its_range_not_clipped_to_white(tmp_path):
    values = np.array([[0, 16384, 32768, 65535]], dtype=np.uint16).repeat(3, 0)
    Image.fromarray(values).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").convert("RGB").getpixel((1, 0)) == (255, 255, 255)  # PIL's clipping
    rgb = np.asarray(load_image(tmp_path / "deep.png"))
    assert rgb.shape == (3, 4, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[0, :, 0], np.round(values[0] / 65535 * 255).astype(np.uint8))


def test_float_images_are_scaled_to_their_range(tmp_path):
    unit = np.array([[0.0, 0.5, 1.0]], dtype=np.float32)
    Image.fromarray(unit, mode="F").save(tmp_path / "unit.tiff")
    assert np.asarray(load_image(tmp_path / "unit.tiff"))[0, :, 1].tolist() == [0, 128, 255]
    wide = np.array([[-10.0, 0.0, 30.0]], dtype=np.float32)
    Image.fromarray(wide, mode="F").save(tmp_path / "wide.tiff")
    assert np.asarray(load_image(tmp_path / "wide.tiff"))[0, :, 2].tolist() == [0, 64, 255]


def test_exif_orientation_is_applied(tmp_path):
    array = np.zeros((10, 20, 3), dtype=np.uint8)
    array[:, :10] = (255, 0, 0)  # left half red, right half blue
    array[:, 10:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(array).save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    image = load_image(tmp_path / "rotated.jpg")
    assert image.size == (10, 20)  # upright: portrait
    top, bottom = image.getpixel((5, 2)), image.getpixel((5, 17))
    assert top[0] > 200 > top[2] and bottom[2] > 200 > bottom[0]  # the left (red) half is now on top


def test_paths_outside_the_folder_get_one_reason_whether_they_exist_or_not(tmp_path):
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(images / "sub" / "in.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "secret.png")
    (images / "link.png").symlink_to(tmp_path / "secret.png")  # inside the folder, pointing out
    (images / "inner.png").symlink_to(images / "sub" / "in.png")  # a link inside is fine
    outside = {
        "../secret.png": True,
        "../nosuch.png": False,
        "sub/../../secret.png": True,
        str(tmp_path / "secret.png"): True,
        str(tmp_path / "nosuch.png"): False,
        "/etc/passwd": True,
        "link.png": True,
        ".": True,
    }
    for name in outside:
        with pytest.raises(ImageError) as info:
            load_image(name, root=images)
        assert info.value.reason == OUTSIDE and str(info.value) == f"{OUTSIDE}: {name}"
    assert load_image("sub/../sub/in.png", root=images).size == (8, 8)
    assert load_image("inner.png", root=images).size == (8, 8)
    assert resolve_inside(images, str(images / "sub" / "in.png")) == (images / "sub" / "in.png").resolve()
    with pytest.raises(ImageError, match=r"^missing image: sub/nope.png$"):
        load_image("sub/nope.png", root=images)


def test_control_characters_in_names_are_not_echoed_raw(tmp_path):
    name = "evil\x1b[2J\x1b[31m\nname.png"
    with pytest.raises(CLIError) as info:
        read_image(tmp_path / name)
    message = str(info.value)
    assert "\x1b" not in message and "\n" not in message and "\\x1b[2J" in message
    assert printable("plain é ü.png") == "plain é ü.png"


def test_corrupt_and_truncated_files(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(ImageError, match=r"^corrupt image: .*bad.png"):
        load_image(tmp_path / "bad.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(tmp_path / "g.png")
    data = (tmp_path / "g.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match=r"^corrupt image: .*cut.png"):
        load_image(tmp_path / "cut.png")


def test_a_sibling_folder_whose_name_starts_with_the_folder_name_is_outside(tmp_path):
    """``images_private/`` beside ``images/``: its path string starts with the folder's, but it is not inside."""
    images, private = tmp_path / "images", tmp_path / "images_private"
    images.mkdir()
    private.mkdir()
    Image.new("RGB", (8, 8)).save(private / "x.png")
    Image.new("RGB", (8, 8)).save(images / "in.png")
    for name in ("../images_private/x.png", str(private / "x.png"), "../images_private/none.png"):
        with pytest.raises(ImageError) as info:
            load_image(name, root=images)
        assert info.value.reason == OUTSIDE and str(info.value) == f"{OUTSIDE}: {name}"
        with pytest.raises(ImageError, match=f"^{OUTSIDE}: "):
            resolve_inside(images, name)
    assert load_image("in.png", root=images).size == (8, 8)


def test_float_images_with_negative_values_up_to_one_are_scaled_to_their_range(tmp_path):
    """A float image in [-1, 1] is not in [0, 1]: its own range maps to [0, 255] (not clipped at 0)."""
    signed = np.array([[-1.0, 0.0, 1.0]], dtype=np.float32)
    Image.fromarray(signed, mode="F").save(tmp_path / "signed.tiff")
    assert np.asarray(load_image(tmp_path / "signed.tiff"))[0, :, 0].tolist() == [0, 128, 255]
    below = np.array([[-0.5, 0.25, 0.5]], dtype=np.float32)  # the maximum below 1 too
    Image.fromarray(below, mode="F").save(tmp_path / "below.tiff")
    assert np.asarray(load_image(tmp_path / "below.tiff"))[0, :, 0].tolist() == [0, 191, 255]
