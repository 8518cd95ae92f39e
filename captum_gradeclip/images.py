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

Every refusal is an :class:`ImageError`, a :class:`~captum_gradeclip.cli.commands.CLIError` (one line, exit code
2) whose ``reason`` is a short category (``"missing image"``, ``"corrupt image"``, ``"too large"``,
``"outside --images"``); the dataset runner turns it into an error row.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from captum_gradeclip.cli import commands
from captum_gradeclip.cli.commands import CLIError

#: Default pixel budget per image (width times height): 100 megapixels.
DEFAULT_MAX_PIXELS = commands.DEFAULT_MAX_PIXELS  # one value, defined where the CLI's help reads it

OUTSIDE = "outside --images"


def printable(text: object) -> str:
    """``text`` with control characters (ANSI escapes, newlines) written as escapes, safe to print to a terminal.

    Examples::

        >>> printable("a\\x1b[31mred\\nname")
        'a\\\\x1b[31mred\\\\nname'
    """
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


class ImageError(CLIError):
    """An image that cannot or may not be read.

    Attributes:
        reason (str): the category: ``"missing image"``, ``"corrupt image"``, ``"too large"`` or
            ``"outside --images"``.
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
    base = Path(root).resolve()
    path = (base / name).resolve()
    if not path.is_relative_to(base) or path == base:
        raise ImageError(OUTSIDE, name)
    return path


def load_image(path: str | Path, root: str | Path | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS):
    """Opens an image file as 8-bit RGB: confined to ``root``, within a pixel budget, in its real range, upright.

    Args:
        path (str or Path): the file, relative to ``root`` when ``root`` is given.
        root (str or Path, optional): the folder the file must lie in (after resolving ``..`` and symbolic
            links). Default: no confinement.
        max_pixels (int, optional): the largest width times height to decode; ``None`` for no budget (PIL's own
            decompression-bomb guard still applies). Default: :data:`DEFAULT_MAX_PIXELS`.

    Returns:
        *PIL.Image.Image* in mode ``"RGB"``, rotated by its EXIF orientation.

    Raises:
        ImageError: if the path is outside ``root``, the file is missing, not an image, corrupt or truncated, or
            larger than the budget.

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
    full = resolve_inside(root, path) if root is not None else Path(path)
    if not full.is_file():
        raise ImageError("missing image", path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(full) as image:
                width, height = image.size
                if max_pixels is not None and width * height > max_pixels:
                    raise ImageError("too large", path, f"{width}x{height} pixels > budget of {max_pixels}")
                image.load()
                image = ImageOps.exif_transpose(image)
                return _to_rgb(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageError("too large", path, _first_line(error)) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as error:
        raise ImageError("corrupt image", path, type(error).__name__) from None


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB; integer images wider than 8 bits and float images are scaled to their real range first."""
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
