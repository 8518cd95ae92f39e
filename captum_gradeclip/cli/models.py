"""``--model`` specs: loading a model and the loader's own preprocessing, as the commands use them.

The loading is the library's (:func:`captum_gradeclip.load`); this module turns its errors into the command
line's, and adds ``--dtype`` and ``--device``. Every error here is a
:class:`~captum_gradeclip.cli.commands.CLIError`: ``captum-gradeclip`` prints it as one line and exits with
status 2, without a traceback. The ShapesCLIP specs come from :data:`captum_gradeclip.zoo.MODEL_SPECS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch
from PIL import Image

from captum_gradeclip.adapters import hf_loader as library_hints
from captum_gradeclip.cli.commands import CLIError
from captum_gradeclip.loading import LoadError, hf_pretrained, hub_reachable, load, quiet_loaders
from captum_gradeclip.viz import seen_image

__all__ = [
    "DTYPES",
    "LoadedModel",
    "convert_model",
    "hf_pretrained",
    "hub_reachable",
    "load_model",
    "quiet_loaders",
    "resolve_device",
    "with_dtype",
]

HUB_HINT = "use --model shapes (the embedded model) or a local path"
#: ``--dtype`` choices.
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class LoadedModel:
    """A model and the loader's own preprocessing, as the CLI uses them.

    Attributes:
        model: the model, in eval mode.
        name: the spec it was loaded from.
        pixels: ``PIL.Image -> (1, C, H, W)`` the loader's own image preprocessing.
        tokenize: ``list[str] -> (input_ids, attention_mask)`` the loader's own tokenizer.
        tokens: ``ids (L,) -> list[str]`` token strings of one row, for merging into words.
        mean, std: the pixel normalisation, to show the image as the model saw it.
        count_tokens: ``str -> int`` the text's length in tokens, without truncation.
        max_tokens: the text tower's context length (longer texts are cut), or ``None``.
        processing: the loader's processing role (:func:`captum_gradeclip.load`'s ``processing``): its geometry
            places the maps on the original image; ``None`` when the model was not loaded from a spec.
    """

    model: torch.nn.Module
    name: str
    pixels: Callable[[Image.Image], torch.Tensor]
    tokenize: Callable[[list[str]], tuple[torch.Tensor, torch.Tensor]]
    tokens: Callable[[torch.Tensor], list[str]]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    count_tokens: Callable[[str], int]
    max_tokens: int | None
    processing: object = None

    def display_image(self, pixel_values: torch.Tensor) -> np.ndarray:
        """``(1, C, H, W)`` normalised pixels -> ``(H, W, 3)`` in [0, 1], what the model saw
        (:func:`captum_gradeclip.seen_image`)."""
        return seen_image(pixel_values, (self.mean, self.std))


def _cli_error(error: LoadError) -> CLIError:
    """The library's one-line error, with its hints in the command line's words."""
    message = str(error).replace(library_hints.HUB_HINT, HUB_HINT)
    return CLIError(message.replace("allow_missing_weights=True", "--allow-missing-weights"))


def load_model(
    spec: str, dtype: str = "float32", device: str = "cpu", *, allow_missing_weights: bool = False
) -> LoadedModel:
    """Loads the model named by ``spec`` through :func:`captum_gradeclip.load`.

    Args:
        spec (str): ``shapes`` (the embedded ShapesCLIP; each spec of :data:`captum_gradeclip.zoo.MODEL_SPECS`,
            e.g. ``shapes:resnet``, names one of its backbones),
            ``hf:NAME_OR_PATH`` (a transformers ``from_pretrained`` name or directory), ``open_clip:ARCH[:PRETRAINED]``
            (``open_clip.create_model_and_transforms``) or ``openai:NAME`` (``clip.load``).
        dtype (str, optional): ``"float32"``, ``"bfloat16"`` or ``"float16"``: the model's
            parameters and the pixels it is given (see :func:`with_dtype`). Default: ``"float32"``.
        device (str, optional): where the model runs: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
            (see :func:`resolve_device`). Default: ``"cpu"``.
        allow_missing_weights (bool, optional): ``--allow-missing-weights``: accept an ``hf:`` checkpoint whose
            weights do not match the model. Default: False.

    Returns:
        *LoadedModel*.

    Raises:
        CLIError: for an unknown spec, a missing extra, an unreachable hub, weights that do not match, or a
            model that no adapter supports.
    """
    where = resolve_device(device)  # before the loading
    try:
        library = load(spec, allow_missing_weights=allow_missing_weights)
    except LoadError as error:
        raise _cli_error(error) from None
    processing = library.processing
    loaded = LoadedModel(
        model=library.model,
        name=spec,
        pixels=processing.pixels,
        tokenize=processing.tokenize,
        tokens=processing.tokens,
        mean=processing.mean,
        std=processing.std,
        count_tokens=processing.count_tokens,
        max_tokens=processing.max_tokens,
        processing=processing,
    )
    loaded = with_dtype(loaded, dtype)
    loaded.model.to(where)
    return loaded


def resolve_device(device: str) -> torch.device:
    """The torch device named by ``--device``, checked against what this machine has.

    Raises:
        CLIError: for a name torch does not know, or a GPU that torch does not see.
    """
    try:
        where = torch.device(device)
    except (RuntimeError, TypeError):
        raise CLIError(f"`--device` must be a torch device such as cpu, cuda or cuda:1; got {device!r}") from None
    if where.type == "cuda" and not torch.cuda.is_available():
        raise CLIError(f"`--device {device}`: torch sees no CUDA GPU on this machine (use --device cpu)")
    if where.type == "cuda" and where.index is not None and where.index >= torch.cuda.device_count():
        raise CLIError(f"`--device {device}`: torch sees {torch.cuda.device_count()} CUDA GPU(s)")
    return where


def with_dtype(loaded: LoadedModel, dtype: str) -> LoadedModel:
    """``loaded`` with its model converted to ``dtype`` and its pixels cast to it.

    The conversion is the loader's own where it has one (see :func:`convert_model`).

    Raises:
        CLIError: for an unknown ``dtype``, or bfloat16 with an OpenAI ``clip`` model.
    """
    if dtype not in DTYPES:
        raise CLIError(f"`--dtype` must be one of {', '.join(DTYPES)}; got {dtype!r}")
    target = DTYPES[dtype]
    if target is torch.float32:
        return loaded
    try:
        convert_model(loaded.model, target)
    except ValueError as error:
        raise CLIError(f"{loaded.name}: {error}; use --dtype float16 or float32") from None
    pixels = loaded.pixels
    return replace(loaded, pixels=lambda image: pixels(image).to(target))


def convert_model(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """Converts ``model`` in place to ``dtype`` the loader's way, and returns it.

    The loader's adapter says how (:meth:`~captum_gradeclip.adapters.Adapter.convert`): OpenAI ``clip`` keeps
    its LayerNorms in float32 and converts the rest with ``clip.model.convert_weights`` (float16 only); every
    other model is cast whole.

    Raises:
        ValueError: where the loader cannot convert to ``dtype`` (OpenAI ``clip``: other than float16 or float32).
    """
    from captum_gradeclip.adapters import adapter_class

    adapter_cls = adapter_class(model)
    return model.to(dtype) if adapter_cls is None else adapter_cls.convert(model, dtype)
