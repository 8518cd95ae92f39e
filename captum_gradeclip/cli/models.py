"""``--model`` specs: loading a model and the loader's own preprocessing, as the commands use them.

Every error here is a :class:`~captum_gradeclip.cli.commands.CLIError`: ``captum-gradeclip`` prints it as one line
and exits with status 2, without a traceback. The ShapesCLIP specs come from :data:`captum_gradeclip.zoo.MODEL_SPECS`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import socket
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors import SafetensorError

from captum_gradeclip.cli.commands import MODEL_SPECS, CLIError

__all__ = [
    "DTYPES",
    "LoadedModel",
    "convert_model",
    "hf_pretrained",
    "hub_reachable",
    "load_model",
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

    def display_image(self, pixel_values: torch.Tensor) -> np.ndarray:
        """``(1, C, H, W)`` normalised pixels -> ``(H, W, 3)`` in [0, 1], what the model saw."""
        mean = torch.tensor(self.mean).view(-1, 1, 1)
        std = torch.tensor(self.std).view(-1, 1, 1)
        return (pixel_values[0].detach().cpu().float() * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()


@contextlib.contextmanager
def quiet_loaders() -> Iterator[None]:
    """Silences the loaders' warnings and log lines, so that an error stays one line."""
    names = ["transformers", "huggingface_hub", "open_clip", "urllib3", "timm"]
    levels = {n: logging.getLogger(n).level for n in names}
    try:
        from transformers.utils import logging as hf_logging

        hf_verbosity = hf_logging.get_verbosity()
        hf_bars = hf_logging.is_progress_bar_enabled()
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - transformers is a dependency
        hf_verbosity = None
    for n in names:
        logging.getLogger(n).setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for n, level in levels.items():
            logging.getLogger(n).setLevel(level)
        if hf_verbosity is not None:
            hf_logging.set_verbosity(hf_verbosity)
            if hf_bars:
                hf_logging.enable_progress_bar()


def hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """Whether ``host`` answers on port 443 within ``timeout`` seconds (False when ``HF_HUB_OFFLINE`` is set)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def load_model(spec: str, dtype: str = "float32", device: str = "cpu") -> LoadedModel:
    """Loads the model named by ``spec``.

    Args:
        spec (str): ``shapes`` (the embedded ShapesCLIP; each spec of :data:`captum_gradeclip.zoo.MODEL_SPECS`,
            e.g. ``shapes:resnet``, names one of its backbones),
            ``hf:NAME_OR_PATH`` (a transformers ``from_pretrained`` name or directory), ``open_clip:ARCH[:PRETRAINED]``
            (``open_clip.create_model_and_transforms``) or ``openai:NAME`` (``clip.load``).
        dtype (str, optional): ``"float32"``, ``"bfloat16"`` or ``"float16"``: the model's
            parameters and the pixels it is given (see :func:`with_dtype`). Default: ``"float32"``.
        device (str, optional): where the model runs: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
            (see :func:`resolve_device`). Default: ``"cpu"``.

    Returns:
        *LoadedModel*.

    Raises:
        CLIError: for an unknown spec, a missing extra, an unreachable hub, or a model that no
            adapter supports.
    """
    where = resolve_device(device)  # before the loading
    kind, _, rest = spec.partition(":")
    loaders = {"shapes": _load_shapes, "hf": _load_hf, "open_clip": _load_open_clip, "openai": _load_openai}
    if kind not in loaders or (kind != "shapes" and not rest):
        raise CLIError(f"unknown model spec {spec!r}; expected {MODEL_SPECS}")
    with quiet_loaders():
        loaded = loaders[kind](rest, spec)
    from captum_gradeclip.adapters import get_adapter

    try:
        get_adapter(loaded.model)
    except TypeError as error:
        raise CLIError(f"{spec}: {_first_line(error)}") from None
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


def _hf_loaded(model: torch.nn.Module, processor: object, spec: str) -> LoadedModel:
    image_processor = getattr(processor, "image_processor", processor)
    tokenizer = getattr(processor, "tokenizer", processor)

    def tokenize(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        batch = processor(text=texts, padding=True, truncation=True, return_tensors="pt")  # type: ignore[operator]
        return batch["input_ids"], batch.get("attention_mask", torch.ones_like(batch["input_ids"]))

    return LoadedModel(
        model=model.eval(),
        name=spec,
        pixels=lambda image: processor(images=image, return_tensors="pt")["pixel_values"],  # type: ignore[operator]
        tokenize=tokenize,
        tokens=lambda ids: tokenizer.convert_ids_to_tokens(ids.tolist()),  # type: ignore[attr-defined]
        mean=tuple(image_processor.image_mean),  # type: ignore[attr-defined]
        std=tuple(image_processor.image_std),  # type: ignore[attr-defined]
        count_tokens=lambda text: len(tokenizer(text)["input_ids"]),  # type: ignore[operator]
        max_tokens=getattr(
            getattr(getattr(model, "config", None), "text_config", None),
            "max_position_embeddings",
            getattr(processor, "context_length", None),  # ShapesProcessor (the ResNet ShapesCLIP)
        ),
    )


def _load_shapes(rest: str, spec: str) -> LoadedModel:
    from captum_gradeclip.zoo import MODEL_SPECS as SHAPES_SPECS
    from captum_gradeclip.zoo import load_shapes_clip

    try:  # a spec of the table, or shapes:BACKBONE (an unknown one: load_shapes_clip names the known ones)
        model, processor = load_shapes_clip(SHAPES_SPECS.get(spec, rest or "vit"))
    except (ValueError, FileNotFoundError, ImportError) as error:
        raise CLIError(f"{spec}: {_first_line(error)}") from None
    return _hf_loaded(model, processor, spec)


def _load_hf(name: str, spec: str) -> LoadedModel:
    return _hf_loaded(*hf_pretrained(name, spec), spec)


def hf_pretrained(name: str, spec: str | None = None) -> tuple[torch.nn.Module, object]:
    """A transformers model and its processor from a ``from_pretrained`` name or a ``save_pretrained`` directory.

    A directory or a cached name loads offline; otherwise the hub is asked only when it answers.

    Args:
        name (str): the hub name or the directory.
        spec (str, optional): how the user named it, for the errors. Default: ``hf:NAME``.

    Raises:
        CLIError: for a missing directory, an unreachable hub, or files that do not load.
    """
    from transformers import AutoModel, AutoProcessor

    spec = spec or f"hf:{name}"
    local = Path(name).expanduser()
    looks_local = local.exists() or name.startswith((".", "/", "~")) or os.sep + os.sep in name
    if looks_local and not local.is_dir():
        raise CLIError(f"{spec}: no such directory {local} (expected a save_pretrained directory)")
    try:
        if looks_local:
            return (
                AutoModel.from_pretrained(local, local_files_only=True),
                AutoProcessor.from_pretrained(local, local_files_only=True),
            )
        with contextlib.suppress(OSError, ValueError):  # already in the local cache: works offline
            return (
                AutoModel.from_pretrained(name, local_files_only=True),
                AutoProcessor.from_pretrained(name, local_files_only=True),
            )
        if not hub_reachable():
            raise CLIError(f"{spec}: the Hugging Face hub is unreachable and {name!r} is not cached; {HUB_HINT}")
        return AutoModel.from_pretrained(name), AutoProcessor.from_pretrained(name)
    except (OSError, ValueError, KeyError, SafetensorError, pickle.UnpicklingError) as error:
        # a truncated safetensors file, or a pickle that is not plain weights (refused, never run)
        raise CLIError(f"{spec}: cannot load ({_first_line(error)}); {HUB_HINT}") from None


def _normalisation(preprocess: object) -> tuple[tuple[float, ...], tuple[float, ...]]:
    for step in getattr(preprocess, "transforms", []):
        if type(step).__name__ == "Normalize":
            return tuple(float(m) for m in step.mean), tuple(float(s) for s in step.std)
    return (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)


def _bpe_loaded(model: torch.nn.Module, preprocess: Callable, encode: Callable, bpe: object, spec: str) -> LoadedModel:
    mean, std = _normalisation(preprocess)

    def tokenize(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids = encode(texts)
        return ids, (ids != 0).long()

    return LoadedModel(
        model=model.eval(),
        name=spec,
        pixels=lambda image: preprocess(image)[None],
        tokenize=tokenize,
        tokens=lambda ids: [bpe.decoder.get(int(i), "") for i in ids],  # type: ignore[attr-defined]
        mean=mean,
        std=std,
        count_tokens=lambda text: len(bpe.encode(text)) + 2,  # type: ignore[attr-defined]  # + start and end
        max_tokens=int(getattr(model, "context_length", 77)),
    )


def _load_open_clip(rest: str, spec: str) -> LoadedModel:
    try:
        import open_clip
    except ImportError:
        raise CLIError(f"{spec}: open_clip is not installed; pip install 'captum-gradeclip[openclip]'") from None
    arch, _, pretrained = rest.partition(":")
    if arch not in open_clip.list_models():
        raise CLIError(f"{spec}: unknown open_clip architecture {arch!r} (see open_clip.list_models())")
    if pretrained and not Path(pretrained).is_file() and not hub_reachable():
        raise CLIError(f"{spec}: the model hub is unreachable, so the {pretrained!r} weights cannot be downloaded; "
                       f"{HUB_HINT} (open_clip:ARCH:/path/to/weights)")  # fmt: skip
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=pretrained or None)
        tokenizer = open_clip.get_tokenizer(arch)
    except (OSError, RuntimeError, ValueError) as error:
        raise CLIError(f"{spec}: cannot load ({_first_line(error)}); {HUB_HINT}") from None
    if not hasattr(tokenizer, "decoder") or not hasattr(tokenizer, "encode"):
        raise CLIError(f"{spec}: its tokenizer ({type(tokenizer).__name__}) is not a CLIP BPE tokenizer")
    return _bpe_loaded(model, preprocess, tokenizer, tokenizer, spec)


def _load_openai(name: str, spec: str) -> LoadedModel:
    try:
        import clip
        from clip.clip import _tokenizer
    except ImportError as error:
        raise CLIError(
            f"{spec}: OpenAI clip cannot be imported ({_first_line(error)}); pip install 'captum-gradeclip[openai]'"
        ) from None
    if not Path(name).is_file() and name not in clip.available_models():
        raise CLIError(f"{spec}: unknown OpenAI CLIP model {name!r}; one of {clip.available_models()} or a path")
    try:  # a cached download loads offline
        model, preprocess = clip.load(name, device="cpu", jit=False)
    except (OSError, RuntimeError) as error:
        if not Path(name).is_file() and not hub_reachable("openaipublic.azureedge.net"):
            raise CLIError(f"{spec}: the OpenAI download server is unreachable and {name!r} is not cached; "
                           f"{HUB_HINT} (openai:/path/to/model.pt)") from None  # fmt: skip
        raise CLIError(f"{spec}: cannot load ({_first_line(error)}); {HUB_HINT}") from None
    return _bpe_loaded(model.float(), preprocess, clip.tokenize, _tokenizer, spec)
