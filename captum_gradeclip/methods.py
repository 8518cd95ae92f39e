"""The method registry: every explanation the package ships, by name, with what it applies to.

A method registers itself where it is defined, with :func:`register` on its class; the
registry finds every module of :mod:`captum_gradeclip.baselines` by itself, so adding a
baseline is its file (and its test): the benchmarks and the tests read the list from here.

Examples::

    >>> from captum_gradeclip import methods
    >>> [m.name for m in methods.available("text")][:3]
    ['Grad-ECLIP (native)', 'Grad-ECLIP (paper)', 'Raw attention']
    >>> explainer = methods.get("RISE").build(sim, n_masks=500, steps=3)  # options a class lacks are ignored
    >>> type(explainer).__name__, explainer.n_masks
    ('RISE', 500)
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from captum_gradeclip.attr import SimilarityAttribution
    from captum_gradeclip.wrappers import SimilarityWrapper

#: The packages whose modules are imported (so that their classes register) before the registry is read.
_PACKAGES = ("captum_gradeclip.attr", "captum_gradeclip.baselines")


@dataclass(frozen=True)
class Method:
    """One registered explanation: a class and the fixed arguments of this variant.

    Attributes:
        name (str): the display name (the benchmark tables' row).
        cls (type): the :class:`~captum_gradeclip.SimilarityAttribution` subclass.
        kwargs (Mapping): fixed constructor arguments of this variant (e.g. ``mode="paper"``).
        quick (Mapping): arguments that keep a run small (tests, smoke runs).
        needs_self_attention (bool): the method reads token-to-token attention, which a tower
            ending in an attention pool (OpenAI/open_clip ResNets) does not have there.
        order (float): position in listings (the shipped methods keep the benchmark tables' order).
    """

    name: str
    cls: type[SimilarityAttribution]
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    quick: Mapping[str, Any] = field(default_factory=dict)
    needs_self_attention: bool = False
    order: float = float("inf")

    @property
    def modalities(self) -> tuple[str, ...]:
        """The wrapper modalities the method explains (``"image"``, ``"text"``)."""
        return tuple(self.cls.modalities)

    def build(self, sim: SimilarityWrapper, *, quick: bool = False, **options: Any) -> SimilarityAttribution:
        """The explainer for ``sim``: the variant's arguments, then ``quick``'s, then those of ``options`` the
        class takes (the others are ignored, so one set of settings serves every method)."""
        accepted = inspect.signature(self.cls.__init__).parameters
        kwargs = {**self.kwargs, **(self.quick if quick else {})}
        kwargs.update({k: v for k, v in options.items() if k in accepted and k not in self.kwargs})
        return self.cls(sim, **kwargs)


_REGISTRY: dict[str, Method] = {}


def register(
    name: str,
    *,
    kwargs: Mapping[str, Any] | None = None,
    quick: Mapping[str, Any] | None = None,
    needs_self_attention: bool = False,
    order: float = float("inf"),
) -> Callable[[type], type]:
    """Class decorator: lists the class under ``name`` (stack it for several variants).

    Args:
        name (str): the display name; registering a name twice is a ValueError.
        kwargs, quick, needs_self_attention, order: see :class:`Method`.

    Returns:
        The decorator, which returns the class unchanged.
    """

    def decorate(cls: type) -> type:
        if name in _REGISTRY and _REGISTRY[name].cls is not cls:
            raise ValueError(f"a method named {name!r} is registered already ({_REGISTRY[name].cls.__name__})")
        _REGISTRY[name] = Method(
            name,
            cls,
            MappingProxyType(dict(kwargs or {})),
            MappingProxyType(dict(quick or {})),
            needs_self_attention,
            order,
        )
        return cls

    return decorate


def _load() -> None:
    for package in _PACKAGES:
        module = importlib.import_module(package)
        for info in pkgutil.iter_modules(module.__path__):
            importlib.import_module(f"{package}.{info.name}")


def available(modality: str | None = None, *, attention_pool: bool = False) -> list[Method]:
    """The registered methods in listing order.

    Args:
        modality (str, optional): ``"image"`` or ``"text"``: only methods that explain it. Default: all.
        attention_pool (bool, optional): ``True`` leaves out the methods that need self-attention in the
            explained block (for towers ending in an attention pool). Default: False.
    """
    if modality not in (None, "image", "text"):
        raise ValueError(f"`modality` must be None, 'image' or 'text'; got {modality!r}")
    _load()
    ranked = sorted(enumerate(_REGISTRY.values()), key=lambda pair: (pair[1].order, pair[0]))
    return [
        m
        for _, m in ranked
        if (modality is None or modality in m.modalities) and not (attention_pool and m.needs_self_attention)
    ]


def get(name: str) -> Method:
    """The method registered as ``name``; a KeyError listing the names otherwise."""
    _load()
    if name not in _REGISTRY:
        raise KeyError(f"no method named {name!r}; registered: {', '.join(m.name for m in available())}")
    return _REGISTRY[name]


def key(name: str) -> str:
    """``name`` for matching: lower case, letters and digits only (``"Grad-ECLIP (paper)"`` -> ``"gradeclippaper"``)."""
    return "".join(ch for ch in name.lower() if ch.isalnum())


def match(name: str, methods: list[Method] | None = None) -> list[Method]:
    """The methods that ``name`` names: the one whose name equals it, or else those whose names start with it,
    up to case, spaces and punctuation (``"game"`` -> GAME, ``"gradeclip"`` -> both Grad-ECLIP modes); a name
    ``"captum:X"`` also answers to ``"X"`` (``"occlusion"`` -> ``captum:Occlusion``).

    Args:
        name (str): a method's name or its start.
        methods (list[Method], optional): where to look. Default: :func:`available`.

    Returns:
        *list[Method]*: the matches in listing order; empty when none (or ``name`` has no letter or digit).

    Examples::

        >>> from captum_gradeclip import methods
        >>> [m.name for m in methods.match("grad-eclip")]
        ['Grad-ECLIP (native)', 'Grad-ECLIP (paper)']
        >>> [m.name for m in methods.match("Grad-ECLIP (paper)")]
        ['Grad-ECLIP (paper)']
    """
    wanted = key(name)
    pool = available() if methods is None else methods
    if not wanted:
        return []
    names = {m.name: {key(m.name), key(m.name.partition(":")[2])} - {""} for m in pool}  # "captum:X" is also "X"
    exact = [m for m in pool if wanted in names[m.name]]
    return exact or [m for m in pool if any(k.startswith(wanted) for k in names[m.name])]
