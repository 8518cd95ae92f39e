"""Loading a model from a spec: :func:`load` returns the model, its loader's own processor, its adapter and the
adapter's processing role (:class:`~captum_gradeclip.adapters.processing.Processing`).

The specs: ``shapes`` (the embedded ShapesCLIP) and the other ShapesCLIP specs of
:data:`captum_gradeclip.zoo.MODEL_SPECS` (``shapes:resnet``, ``shapes:deep``, ``shapes:vit``), and the prefix of
each adapter that loads (:attr:`~captum_gradeclip.adapters.processing.ProcessingRole.spec_prefixes`):
``hf:NAME_OR_DIR``, ``open_clip:ARCH[:PRETRAINED]`` (or ``openclip:``) and ``openai:NAME``. The hub is asked only
when it answers; every failure is a :class:`LoadError` whose message is one line.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from torch import Tensor, nn

from captum_gradeclip.adapters.geometry import Geometry
from captum_gradeclip.adapters.hf_loader import HUB_HINT, hf_pretrained, hub_reachable
from captum_gradeclip.adapters.processing import LoadError, Processing, ProcessingRole, first_line
from captum_gradeclip.specs import SPECS  # the spec forms, as the errors list them (the CLI's help too)

__all__ = ["SPECS", "LoadError", "Loaded", "hf_pretrained", "hub_reachable", "load", "quiet_loaders"]

_ = HUB_HINT  # re-exported for the command line, which rewrites it


@dataclass
class Loaded:
    """A model, its loader's own processor, its adapter and the adapter's processing role.

    Attributes:
        model (nn.Module): the model, in eval mode.
        processor (object): the loader's own processor: a transformers processor, the ResNet ShapesCLIP's
            processor, or open_clip's / OpenAI ``clip``'s image preprocess.
        tokenizer (object): the tokenizer where the processor has none (open_clip, OpenAI ``clip``), else ``None``.
        adapter (Adapter): the model's adapter (:func:`captum_gradeclip.get_adapter`).
        processing (Processing): images to pixels, texts to ids, ids to words, and the inverse geometry.
        spec (str): the spec it was loaded from.

    Examples::

        >>> loaded = cg.load("shapes")
        >>> pixels = loaded.pixels(scene.image)
        >>> ids, mask = loaded.tokenize(["a red circle"])
        >>> tuple(pixels.shape), loaded.tokens(ids[0][mask[0].bool()])
        ((1, 3, 64, 64), ['<s>', 'a', 'red', 'circle', '</s>'])
    """

    model: nn.Module
    processor: object
    tokenizer: object
    adapter: object
    processing: Processing
    spec: str

    def pixels(self, images: object) -> Tensor:
        """One PIL image or a list -> ``(N, C, H, W)`` pixel values, as the loader preprocesses them."""
        return self.processing.pixels(images)

    def tokenize(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """``texts`` -> ``(input_ids, attention_mask)``; a text's ids never depend on the texts beside it."""
        return self.processing.tokenize(texts)

    def tokens(self, ids: Tensor) -> list[str]:
        """``(L,)`` ids of one text -> its token strings."""
        return self.processing.tokens(ids)

    def geometry(self, size: tuple[int, int]) -> Geometry:
        """The preprocessing geometry on an original image of ``size`` ``(H, W)``."""
        return self.processing.geometry(size)

    def to_original(self, maps: Tensor, image: object, mode: str = "bilinear") -> Tensor:
        """Maps on the model's grid -> on ``image``, NaN where the model did not see it (:func:`cg.to_original`)."""
        return self.processing.to_original(maps, image, mode)

    def seen_image(self, pixel_values: Tensor) -> np.ndarray:
        """``(1, C, H, W)`` pixel values -> ``(H, W, C)`` in [0, 1], the image as the model saw it."""
        return self.processing.seen_image(pixel_values)


@contextlib.contextmanager
def quiet_loaders() -> Iterator[None]:
    """Silences the loaders' warnings, log lines and progress bars, so that an error stays one line.

    A checkpoint's missing or unexpected weights are not lost: :func:`load` reads them from the loader's
    loading info and refuses them (see ``allow_missing_weights``).
    """
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


def _spec_loader(prefix: str) -> type[ProcessingRole] | None:
    from captum_gradeclip.adapters import ADAPTERS

    for adapter_cls in ADAPTERS:
        if issubclass(adapter_cls, ProcessingRole) and prefix in adapter_cls.spec_prefixes:
            return adapter_cls
    return None


def _known_specs() -> str:
    from captum_gradeclip.adapters import ADAPTERS

    shipped = {"hf", "open_clip", "openclip", "openai"}
    extra = [
        f"{prefix}:..."
        for adapter_cls in ADAPTERS
        if issubclass(adapter_cls, ProcessingRole)
        for prefix in adapter_cls.spec_prefixes
        if prefix not in shipped
    ]
    return " | ".join([SPECS, *extra])


def _shapes_specs() -> dict[str, str]:
    """Every ShapesCLIP spec -> its backbone: the table's (``shapes:deep``) and ``shapes:BACKBONE``."""
    from captum_gradeclip.zoo import MODEL_SPECS
    from captum_gradeclip.zoo.shapes_clip import BACKBONES

    return {**MODEL_SPECS, **{f"shapes:{backbone}": backbone for backbone in BACKBONES}}


def _unknown_spec(spec: str) -> LoadError:
    """The error for a spec no loader takes, with the closest valid spec as it would be typed (a suggestion,
    never a guess that is loaded)."""
    from captum_gradeclip.adapters import ADAPTERS

    prefixes = [f"{p}:" for a in ADAPTERS if issubclass(a, ProcessingRole) for p in a.spec_prefixes]
    close = difflib.get_close_matches(spec, list(_shapes_specs()), n=1, cutoff=0.75)
    if not close and ":" in spec:  # a misspelt prefix: hf, open_clip, openai, ...
        prefix, _, rest = spec.partition(":")
        close = [c + rest for c in difflib.get_close_matches(prefix + ":", prefixes, n=1, cutoff=0.75)]
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return LoadError(f"unknown model spec {spec!r}{hint}; the specs are {_known_specs()}")


def _load_shapes(spec: str) -> tuple[nn.Module, object]:
    from captum_gradeclip.zoo import load_shapes_clip

    backbone = _shapes_specs().get(spec)
    if backbone is None:
        raise _unknown_spec(spec)
    try:
        return load_shapes_clip(backbone)
    except (ValueError, FileNotFoundError, ImportError) as error:
        raise LoadError(f"{spec}: {first_line(error)}") from None


def load(spec: str, *, allow_missing_weights: bool = False) -> Loaded:
    """Loads the model named by ``spec`` with its loader's own processor, its adapter and its processing role.

    Args:
        spec (str): ``shapes`` (the embedded ShapesCLIP; ``shapes:resnet``, ``shapes:deep`` and the other specs
            of :data:`captum_gradeclip.zoo.MODEL_SPECS` name its backbones), ``hf:NAME_OR_DIR`` (a transformers
            hub name or ``save_pretrained`` directory), ``open_clip:ARCH[:PRETRAINED]`` (or ``openclip:``; no
            ``PRETRAINED``: random weights) or ``openai:NAME`` (``clip.load``), or the prefix of another loader.
        allow_missing_weights (bool, optional): accept an ``hf:`` checkpoint whose weights do not match the model
            (missing ones stay randomly initialised). Default: False (a :class:`LoadError` names them).

    Returns:
        *Loaded*: the model on the CPU in eval mode, in float32.

    Raises:
        LoadError: for an unknown spec, a missing extra, an unreachable hub, weights that do not match, or a
            model that no adapter supports; the message is one line.

    Examples::

        >>> loaded = cg.load("shapes:deep")
        >>> type(loaded.adapter).__name__, loaded.adapter.patch_grid(loaded.pixels(scene.image))
        ('HFCLIPAdapter', (14, 14))
        >>> cg.load("clip:ViT-B/32")
        Traceback (most recent call last):
        ...
        captum_gradeclip.adapters.processing.LoadError: unknown model spec 'clip:ViT-B/32'; the specs are shapes | ...
    """
    if not isinstance(spec, str):
        raise TypeError(f"`spec` must be a str such as 'shapes' or 'hf:DIR'; got {type(spec).__name__}")
    prefix, _, rest = spec.partition(":")
    loader = None if prefix == "shapes" else _spec_loader(prefix)
    if (prefix != "shapes" and loader is None) or (prefix != "shapes" and not rest):
        raise _unknown_spec(spec)
    with quiet_loaders():
        if loader is None:
            model, processor = _load_shapes(spec)
        else:
            model, processor = loader.load_spec(rest, spec, allow_missing_weights=allow_missing_weights)
    tokenizer = None
    if isinstance(processor, tuple):  # an image preprocess and a tokenizer (open_clip)
        processor, tokenizer = processor
    from captum_gradeclip.adapters import get_adapter

    try:
        adapter = get_adapter(model)
    except TypeError as error:
        raise LoadError(f"{spec}: {first_line(error)}") from None
    if not isinstance(adapter, ProcessingRole):
        raise LoadError(f"{spec}: the {adapter.loader_name} adapter has no processing role (ProcessingRole)")
    return Loaded(model.eval(), processor, tokenizer, adapter, adapter.processing(processor, tokenizer), spec)
