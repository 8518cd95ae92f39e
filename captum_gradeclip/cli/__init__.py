"""The command line: ``captum-gradeclip demo | explain | explain-dataset``.

- :mod:`~captum_gradeclip.cli.main`: the entry point, ``main`` (``python -m captum_gradeclip``, the
  ``captum-gradeclip`` script);
- :mod:`~captum_gradeclip.cli.commands`: the parsers and help texts (no heavy import, so ``--help`` answers at
  once), :class:`CLIError` and the one one-line error path (:func:`~captum_gradeclip.cli.commands.fail`);
- :mod:`~captum_gradeclip.cli.models`: ``--model`` specs to a model and its preprocessing (:func:`load_model`);
- :mod:`~captum_gradeclip.cli.files`: reading the image, checking the output folder;
- :mod:`~captum_gradeclip.cli.explain`, :mod:`~captum_gradeclip.cli.demo`, :mod:`~captum_gradeclip.cli.dataset`:
  the commands.

The names below are imported on first use (PEP 562), so that importing the parsers imports no torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: Public name -> the module of this package that defines it.
_NAMES = {
    "ArgumentParser": "commands",
    "CLIError": "commands",
    "MODEL_SPECS": "commands",
    "fail": "commands",
    "DTYPES": "models",
    "LoadedModel": "models",
    "convert_model": "models",
    "hub_reachable": "models",
    "load_model": "models",
    "resolve_device": "models",
    "with_dtype": "models",
    "check_output_directory": "files",
    "read_image": "files",
}

__all__ = [
    "DTYPES",
    "MODEL_SPECS",
    "ArgumentParser",
    "CLIError",
    "LoadedModel",
    "check_output_directory",
    "convert_model",
    "fail",
    "hub_reachable",
    "load_model",
    "read_image",
    "resolve_device",
    "with_dtype",
]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from captum_gradeclip.cli.commands import MODEL_SPECS, ArgumentParser, CLIError, fail
    from captum_gradeclip.cli.files import check_output_directory, read_image
    from captum_gradeclip.cli.models import (
        DTYPES,
        LoadedModel,
        convert_model,
        hub_reachable,
        load_model,
        resolve_device,
        with_dtype,
    )


def __getattr__(name: str) -> Any:
    if name not in _NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_NAMES[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
