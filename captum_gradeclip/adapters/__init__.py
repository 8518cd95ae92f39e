"""Loader adapters. :func:`get_adapter` picks the one that understands a model."""

from __future__ import annotations

from captum_gradeclip.adapters.base import (
    Adapter,
    AttentionRecord,
    PooledTail,
    Substitute,
    capture_input,
)
from captum_gradeclip.adapters.hf_blip import HFBlipRetrievalAdapter
from captum_gradeclip.adapters.hf_clip import HFCLIPAdapter
from captum_gradeclip.adapters.hf_siglip import HFSiglipAdapter
from captum_gradeclip.adapters.hf_vit import HFViTClassifierAdapter
from captum_gradeclip.adapters.open_clip import OpenCLIPAdapter
from captum_gradeclip.adapters.openai_clip import OpenAICLIPAdapter
from captum_gradeclip.ops import pooled_attention

#: Adapters tried in order by :func:`get_adapter`.
ADAPTERS: list[type[Adapter]] = [
    HFCLIPAdapter,
    HFSiglipAdapter,
    HFBlipRetrievalAdapter,
    HFViTClassifierAdapter,
    OpenCLIPAdapter,
    OpenAICLIPAdapter,
]


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
    for adapter_cls in ADAPTERS:
        if adapter_cls.matches(model):
            return adapter_cls(model)  # type: ignore[arg-type]
    supported = ", ".join(a.loader_name for a in ADAPTERS)
    raise TypeError(
        f"`model` must be an image-text model of a supported loader ({supported}); "
        f"got {type(model).__module__}.{type(model).__name__}"
    )


__all__ = [
    "ADAPTERS",
    "Adapter",
    "AttentionRecord",
    "PooledTail",
    "Substitute",
    "capture_input",
    "get_adapter",
    "pooled_attention",
]
