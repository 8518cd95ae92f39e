"""Files the commands read and write: the input image, the output folder (checked before any computing)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from PIL import Image

from captum_gradeclip.cli.commands import CLIError

__all__ = ["check_output_directory", "read_image"]


def read_image(path: str | Path) -> Image.Image:
    """Opens an image file as RGB with :func:`captum_gradeclip.images.load_image` (the one image reader).

    Raises:
        CLIError: if the file is missing, is not a readable image or exceeds the pixel budget.
    """
    from captum_gradeclip.images import ImageError, load_image

    try:
        return load_image(path)
    except ImageError as error:
        raise CLIError(str(error)) from None


def check_output_directory(path: Path, argument: str = "--out") -> None:
    """Makes ``path`` (a directory) if needed and checks that files can be written there, before any computing.

    Raises:
        CLIError: if ``path`` is a file, or cannot be created or written to.
    """
    from captum_gradeclip.images import printable

    if path.exists() and not path.is_dir():
        raise CLIError(f"`{argument}` {printable(path)} exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test.tmp-"):
            pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise CLIError(f"`{argument}` {printable(path)} is not writable ({reason})") from None
