"""Loader adapters. :func:`get_adapter` picks the one that understands a model.

A loader is one module of this package with one :class:`Adapter` subclass that also derives from the roles its
model has (:class:`ImageTower`, :class:`TextTower`, :class:`Scorer`, :class:`Classifier`,
:class:`ResidualAccess`, :class:`TokenProjection`). The package finds every module here by itself: an adapter
in a new module is tried after the shipped ones, with no other edit.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

from captum_gradeclip.adapters.base import (
    ROLES,
    Adapter,
    AttentionRecord,
    Classifier,
    ImageTower,
    PooledTail,
    ResidualAccess,
    Scorer,
    Substitute,
    TextTower,
    TokenProjection,
    capture_input,
    is_own_hook,
    thread_owned,
)
from captum_gradeclip.adapters.hf_blip import HFBlipRetrievalAdapter
from captum_gradeclip.adapters.hf_clip import HFCLIPAdapter
from captum_gradeclip.adapters.hf_siglip import HFSiglipAdapter
from captum_gradeclip.adapters.hf_vit import HFViTClassifierAdapter
from captum_gradeclip.adapters.open_clip import OpenCLIPAdapter
from captum_gradeclip.adapters.openai_clip import OpenAICLIPAdapter
from captum_gradeclip.ops import pooled_attention

#: The shipped adapters, in the order they are tried.
_SHIPPED: list[type[Adapter]] = [
    HFCLIPAdapter,
    HFSiglipAdapter,
    HFBlipRetrievalAdapter,
    HFViTClassifierAdapter,
    OpenCLIPAdapter,
    OpenAICLIPAdapter,
]


def _discover() -> list[type[Adapter]]:
    """The concrete adapters defined in the other modules of this package (imported here), by module name."""
    found: list[type[Adapter]] = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda info: info.name):
        if info.name.startswith("_") or info.name in ("base", "mha"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for obj in vars(module).values():
            if (
                isinstance(obj, type)
                and issubclass(obj, Adapter)
                and obj.__module__ == module.__name__
                and not inspect.isabstract(obj)
                and obj not in _SHIPPED
            ):
                found.append(obj)
    return found


#: Adapters tried in order by :func:`get_adapter`: the shipped ones, then any other module's of this package.
ADAPTERS: list[type[Adapter]] = [*_SHIPPED, *_discover()]


def adapter_class(model: object) -> type[Adapter] | None:
    """The first adapter class of :data:`ADAPTERS` that understands ``model``, or ``None``."""
    return next((adapter_cls for adapter_cls in ADAPTERS if adapter_cls.matches(model)), None)


def get_adapter(model: object) -> Adapter:
    """Returns the adapter for ``model``.

    Raises:
        TypeError: if no adapter knows the model; the message lists the supported loaders.

    Examples::

        >>> type(get_adapter(model)).__name__  # ShapesCLIP is a transformers CLIPModel
        'HFCLIPAdapter'
        >>> get_adapter(torch.nn.Linear(2, 2))
        Traceback (most recent call last):
        ...
        TypeError: `model` must be an image-text model of a supported loader (...); got torch.nn.modules.linear.Linear
    """
    adapter_cls = adapter_class(model)
    if adapter_cls is not None:
        return adapter_cls(model)  # type: ignore[arg-type]  # its matches() took it: the loader's nn.Module
    supported = ", ".join(a.loader_name for a in ADAPTERS)
    raise TypeError(
        f"`model` must be an image-text model of a supported loader ({supported}); "
        f"got {type(model).__module__}.{type(model).__name__}"
    )


__all__ = [
    "ADAPTERS",
    "ROLES",
    "Adapter",
    "AttentionRecord",
    "Classifier",
    "ImageTower",
    "PooledTail",
    "ResidualAccess",
    "Scorer",
    "Substitute",
    "TextTower",
    "TokenProjection",
    "adapter_class",
    "capture_input",
    "get_adapter",
    "is_own_hook",
    "pooled_attention",
    "thread_owned",
]
