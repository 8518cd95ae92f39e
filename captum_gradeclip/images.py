"""Reading image files safely: the one image reader of the command-line tools and the dataset runner.

:func:`load_image` opens a file as an 8-bit RGB ``PIL.Image`` the way a demanding user expects:

- **Confinement.** With ``root``, the path (after resolving ``..`` and symbolic links) must lie inside ``root``;
  anything else, existing or not, is refused with the one reason ``"outside --images"``, so that a pairs file
  cannot read files elsewhere nor probe which exist.
- **Pixel budget.** An image whose header claims more than ``max_pixels`` pixels is refused before it is decoded,
  and PIL's own decompression-bomb guard (error or warning) becomes the same refusal, never a crash.
- **Real range.** 16-bit and 32-bit integer images are scaled by their type's range and float images by their
  values' range (kept as they are when already in [0, 1]), instead of being clipped to white.
- **Orientation.** The EXIF orientation tag is applied (:func:`PIL.ImageOps.exif_transpose`).

- **Processed size.** With ``resize_side`` (the side the model's preprocessing resizes the shorter edge to), an
  image whose *processed* size would exceed the budget (an extreme aspect ratio: a 1 x 64000 strip becomes
  64 x 4,096,000) is refused before the processor runs.
- **Hostile names.** A NUL byte, an overlong name, a symbolic-link loop or a lone surrogate is a refusal with its
  reason, never a traceback.

Every refusal is an :class:`ImageError` (a ``ValueError``) whose ``reason`` is a short category
(``"missing image"``, ``"corrupt image"``, ``"too large"``, ``"outside --images"``, ``"bad path"``); the dataset
runner turns it into an error row, the command line into one line and exit code 2. This module imports PIL and
numpy only when it reads an image, so the command line's ``--help`` can import its constants.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

#: Default pixel budget per image (width times height): 100 megapixels.
DEFAULT_MAX_PIXELS = 100_000_000

OUTSIDE = "outside --images"


def printable(text: object) -> str:
    """``text`` with control characters (ANSI escapes, newlines) written as escapes, safe to print to a terminal.

    Examples::

        >>> printable("a\\x1b[31mred\\nname")
        'a\\\\x1b[31mred\\\\nname'
    """
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


class ImageError(ValueError):
    """An image that cannot or may not be read.

    Attributes:
        reason (str): the category: ``"missing image"``, ``"corrupt image"``, ``"too large"``,
            ``"outside --images"`` or ``"bad path"`` (a NUL byte, a lone surrogate, a name too long, a link loop).
        name (str): the path as the user gave it (printable).
    """

    def __init__(self, reason: str, name: object, detail: str = "") -> None:
        self.reason, self.name = reason, printable(name)
        super().__init__(f"{reason}: {self.name}" + (f" ({detail})" if detail else ""))


def resolve_inside(root: str | Path, name: str | Path) -> Path:
    """The path of ``name`` relative to ``root``, refused unless it resolves inside ``root``.

    ``..`` components and symbolic links are resolved first; an absolute ``name`` is outside unless it points
    into ``root``. The refusal does not depend on whether the file exists.

    Raises:
        ImageError: with reason ``"outside --images"``.
    """
    check_name(name)
    try:
        base = Path(root).resolve()
        path = (base / name).resolve()
    except (OSError, RuntimeError, ValueError) as error:  # a symbolic-link loop, a name too long
        raise ImageError("bad path", name, _why(error)) from None
    if not path.is_relative_to(base) or path == base:
        raise ImageError(OUTSIDE, name)
    return path


def check_name(name: str | Path) -> None:
    """Refuses a path that no file can have: a NUL byte, a lone surrogate, an overlong name or component.

    Raises:
        ImageError: with reason ``"bad path"``.
    """
    text = str(name)
    if "\0" in text:
        raise ImageError("bad path", name, "a NUL byte")
    try:
        os.fsencode(text)
    except UnicodeError:
        raise ImageError("bad path", name, "not encodable (a lone surrogate)") from None
    if len(os.fsencode(text)) > 4096 or any(len(os.fsencode(p)) > 255 for p in Path(text).parts):
        raise ImageError("bad path", name, "name too long")


def _why(error: BaseException) -> str:
    return getattr(error, "strerror", None) or type(error).__name__


def load_image(
    path: str | Path,
    root: str | Path | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    resize_side: int | None = None,
) -> Image.Image:
    """Opens an image file as 8-bit RGB: confined to ``root``, within a pixel budget, in its real range, upright.

    Args:
        path (str or Path): the file, relative to ``root`` when ``root`` is given.
        root (str or Path, optional): the folder the file must lie in (after resolving ``..`` and symbolic
            links). Default: no confinement.
        max_pixels (int, optional): the largest width times height to decode; ``None`` for no budget (PIL's own
            decompression-bomb guard still applies). Default: :data:`DEFAULT_MAX_PIXELS`.
        resize_side (int, optional): the side the model's preprocessing resizes the image's shorter edge to: the
            image is also refused when that resize would give more than ``max_pixels`` pixels. Default: only the
            file's own size is checked.

    Returns:
        *PIL.Image.Image* in mode ``"RGB"``, rotated by its EXIF orientation.

    Raises:
        ImageError: if the path is outside ``root`` or impossible, the file is missing, not an image, corrupt or
            truncated, or larger than the budget (as a file, or once resized to ``resize_side``).

    Examples::

        >>> from captum_gradeclip.images import load_image
        >>> scene.image.save(tmp_path / "scene.png")
        >>> load_image("scene.png", root=tmp_path).size
        (64, 64)
        >>> load_image("../scene.png", root=tmp_path / "sub")
        Traceback (most recent call last):
        ...
        captum_gradeclip.images.ImageError: outside --images: ../scene.png
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    full = resolve_inside(root, path) if root is not None else Path(path)
    check_name(full)
    try:
        if not full.is_file():
            raise ImageError("missing image", path)
    except OSError as error:
        raise ImageError("bad path", path, _why(error)) from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(full) as image:
                width, height = image.size
                if max_pixels is not None and width * height > max_pixels:
                    raise ImageError("too large", path, f"{width}x{height} pixels > budget of {max_pixels}")
                if max_pixels is not None and resize_side is not None:
                    short, long = sorted((max(width, 1), max(height, 1)))
                    resized = resize_side * -(-resize_side * long // short)
                    if resized > max_pixels:
                        raise ImageError(
                            "too large", path, f"{width}x{height} pixels, resized to a shorter side of "
                            f"{resize_side}: {resized} pixels > budget of {max_pixels}"
                        )  # fmt: skip
                image.load()
                return _to_rgb(ImageOps.exif_transpose(image))
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageError("too large", path, _first_line(error)) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as error:
        raise ImageError("corrupt image", path, type(error).__name__) from None


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB; integer images wider than 8 bits and float images are scaled to their real range first."""
    import numpy as np
    from PIL import Image

    if image.mode in ("I", "F") or image.mode.startswith("I;"):
        values = np.asarray(image)
        if values.dtype.kind == "f":
            values = values.astype(np.float64)
            if not np.isfinite(values).all():
                raise ValueError("non-finite pixel values")
            low, high = float(values.min()), float(values.max())
            if low < 0 or high > 1:  # not already in [0, 1]: its own range
                values = (values - low) / (high - low) if high > low else np.zeros_like(values)
        else:
            top = 65535 if values.max(initial=0) <= 65535 and values.min(initial=0) >= 0 else None
            if top is None:  # 32-bit data beyond 16 bits: its own range
                values = values.astype(np.float64)
                low, high = float(values.min()), float(values.max())
                values = (values - low) / (high - low) if high > low else np.zeros_like(values)
            else:
                values = values.astype(np.float64) / top
        image = Image.fromarray(np.round(values * 255).astype(np.uint8), mode="L")
    return image.convert("RGB")
