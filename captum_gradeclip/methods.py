"""The method registry: every explanation the package ships, by name, with what it applies to.

A method's identity is declared once, on its class: :attr:`~captum_gradeclip.SimilarityAttribution.method_name`,
``variants``, ``quick_options``, ``listing_order`` and ``needs_self_attention``. The registry finds every
module of :mod:`captum_gradeclip.attr` and :mod:`captum_gradeclip.baselines` by itself and reads those
declarations, so adding a baseline is its file (and its test), and no method module imports the registry:
the benchmarks, the command line's help, the docs' tables and the tests read the list from here.
Code outside these packages lists its own methods with :func:`register`.

Examples::

    >>> from captum_gradeclip import methods
    >>> [m.name for m in methods.available("text")][:3]
    ['Grad-ECLIP (native)', 'Grad-ECLIP (paper)', 'Raw attention']
    >>> explainer = methods.get("RISE").build(sim, n_masks=500)
    >>> type(explainer).__name__, explainer.n_masks
    ('RISE', 500)
    >>> methods.get("RISE").build(sim, n_mask=500)  # a misspelt option is refused, with the valid ones
    Traceback (most recent call last):
        ...
    TypeError: RISE has no option 'n_mask'; its options: n_masks, grid, p, masks, baseline, batch_size, seed
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from captum_gradeclip.attr.base import SimilarityAttribution
    from captum_gradeclip.wrappers import SimilarityWrapper

#: The packages whose modules are searched for method classes before the registry is read.
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

    @property
    def options(self) -> tuple[str, ...]:
        """The options :meth:`build` takes: the class's constructor options but those the variant fixes."""
        from captum_gradeclip.attr.contract import constructor_options  # here: the registry imports no torch

        valid = constructor_options(self.cls) or ()
        return tuple(name for name in valid if name not in self.kwargs)

    def build(self, sim: SimilarityWrapper, *, quick: bool = False, **options: Any) -> SimilarityAttribution:
        """The explainer for ``sim``: the variant's arguments, then ``quick``'s, then ``options``.

        ``options`` are the class's constructor options (:attr:`options`); any other name is a TypeError
        listing the valid ones, so a misspelt option never goes unnoticed. Pass each method only what it
        takes. Two exceptions keep one call valid for every variant: an option that the variant fixes
        (``mode`` of ``"Grad-ECLIP (paper)"``) keeps the variant's value, and ``mode="native"`` is accepted
        by a method without modes (the one mode it has); another ``mode`` for it is a ValueError.

        Raises:
            TypeError: an option that the method does not take, with the method's valid options.
            ValueError: a ``mode`` other than ``"native"`` for a method without modes.
        """
        from captum_gradeclip.attr.contract import constructor_options

        valid = constructor_options(self.cls)
        if "mode" in options and valid is not None and "mode" not in valid:
            if options["mode"] != "native":
                raise ValueError(f"{self.name} has no modes; got mode={options['mode']!r} (only 'native' applies)")
            options = {k: v for k, v in options.items() if k != "mode"}
        unknown = [k for k in options if valid is not None and k not in valid]
        if unknown:
            raise TypeError(
                f"{self.name} has no option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
                f"its options: {', '.join(self.options) or 'none'}"
            )
        kwargs = {**self.kwargs, **(self.quick if quick else {})}
        kwargs.update({k: v for k, v in options.items() if k not in self.kwargs})
        return self.cls(sim, **kwargs)


#: Methods listed by :func:`register` (code outside the searched packages).
_REGISTERED: dict[str, Method] = {}


def register(
    name: str,
    *,
    kwargs: Mapping[str, Any] | None = None,
    quick: Mapping[str, Any] | None = None,
    needs_self_attention: bool | None = None,
    order: float | None = None,
) -> Callable[[type], type]:
    """Class decorator for a method defined outside ``attr/`` and ``baselines/``: lists the class under
    ``name`` (stack it for several variants). The package's own methods declare their identity on the class.

    Args:
        name (str): the display name; a name listed twice is a ValueError.
        kwargs, quick, needs_self_attention, order: see :class:`Method`; ``quick``, ``needs_self_attention``
            and ``order`` default to the class's declarations (``quick_options``, ``needs_self_attention``,
            ``listing_order``).

    Returns:
        The decorator, which returns the class unchanged.
    """

    def decorate(cls: type) -> type:
        existing = next((m for m in available() if m.name == name), None)
        if existing is not None and existing.cls is not cls:
            raise ValueError(f"a method named {name!r} is registered already ({existing.cls.__name__})")
        _REGISTERED[name] = Method(
            name,
            cls,
            MappingProxyType(dict(kwargs or {})),
            MappingProxyType(dict(getattr(cls, "quick_options", {}) if quick is None else quick)),
            bool(getattr(cls, "needs_self_attention", False) if needs_self_attention is None else needs_self_attention),
            float(getattr(cls, "listing_order", float("inf")) if order is None else order),
        )
        return cls

    return decorate


def declared(cls: type[SimilarityAttribution]) -> list[Method]:
    """The methods a class declares: one per variant (:attr:`~captum_gradeclip.SimilarityAttribution.variants`,
    or its :attr:`~captum_gradeclip.SimilarityAttribution.method_name` alone), in the order declared; none for a
    class that declares no ``method_name`` itself (a base, or a subclass inheriting its parent's)."""
    if "method_name" not in vars(cls) or not cls.method_name:
        return []
    variants = cls.variants or {cls.method_name: {}}
    made = []
    for name, fixed in variants.items():
        method = Method(
            name,
            cls,
            MappingProxyType(dict(fixed)),
            MappingProxyType(dict(cls.quick_options)),
            bool(cls.needs_self_attention),
            float(cls.listing_order),
        )
        made.append(_MADE.setdefault((cls, name), method) if _MADE.get((cls, name)) in (None, method) else method)
    return made


#: The :class:`Method` made for each (class, name), so that reading the registry twice gives the same objects.
_MADE: dict[tuple[type, str], Method] = {}


def _discover() -> list[Method]:
    """The methods declared by the classes of every module of :data:`_PACKAGES` (imported here), by module name;
    then those listed by :func:`register`. A name declared twice is a ValueError naming both classes."""
    from captum_gradeclip.attr.base import SimilarityAttribution

    found: dict[str, Method] = {}
    extra = list(_REGISTERED.values())
    for package in _PACKAGES:
        root = importlib.import_module(package)
        for info in sorted(pkgutil.iter_modules(root.__path__), key=lambda info: info.name):
            module = importlib.import_module(f"{package}.{info.name}")
            classes = [
                obj
                for obj in vars(module).values()
                if isinstance(obj, type)
                and issubclass(obj, SimilarityAttribution)
                and obj.__module__ == module.__name__
            ]
            for method in (m for cls in classes for m in declared(cls)):
                extra = [m for m in extra if not (m.name == method.name and m.cls is method.cls)]
                if method.name in found:
                    raise ValueError(
                        f"two methods are named {method.name!r}: {found[method.name].cls.__qualname__} and "
                        f"{method.cls.__qualname__}"
                    )
                found[method.name] = method
    for method in extra:
        if method.name in found:
            raise ValueError(
                f"a method named {method.name!r} is registered already ({found[method.name].cls.__name__})"
            )
        found[method.name] = method
    return list(found.values())


def available(modality: str | None = None, *, attention_pool: bool = False) -> list[Method]:
    """The registered methods in listing order.

    Args:
        modality (str, optional): ``"image"`` or ``"text"``: only methods that explain it. Default: all.
        attention_pool (bool, optional): ``True`` leaves out the methods that need self-attention in the
            explained block (for towers ending in an attention pool). Default: False.
    """
    if modality not in (None, "image", "text"):
        raise ValueError(f"`modality` must be None, 'image' or 'text'; got {modality!r}")
    ranked = sorted(enumerate(_discover()), key=lambda pair: (pair[1].order, pair[0]))
    return [
        m
        for _, m in ranked
        if (modality is None or modality in m.modalities) and not (attention_pool and m.needs_self_attention)
    ]


def get(name: str) -> Method:
    """The method registered as ``name``; a KeyError listing the names otherwise."""
    listed = available()
    found = next((m for m in listed if m.name == name), None)
    if found is None:
        raise KeyError(f"no method named {name!r}; registered: {', '.join(m.name for m in listed)}")
    return found


#: What matching ignores besides case: spaces and the punctuation that names are written with. Anything else
#: (``"gradcam++"``'s pluses) must match, so a near-miss never silently names another method.
_IGNORED = frozenset(" -_():")


def key(name: str) -> str:
    """``name`` for matching: lower case, without spaces, ``-``, ``_``, ``(``, ``)`` and ``:``
    (``"Grad-ECLIP (paper)"`` -> ``"gradeclippaper"``; ``"gradcam++"`` stays ``"gradcam++"``)."""
    return "".join(ch for ch in name.lower() if ch not in _IGNORED and not ch.isspace())


def closest(name: str, methods: list[Method] | None = None) -> str | None:
    """The registered name closest to ``name`` (a did-you-mean for an unknown name), or ``None``.

    Examples::

        >>> from captum_gradeclip import methods
        >>> methods.closest("gradcam++"), methods.closest("zzz")
        ('Grad-CAM', None)
    """
    pool = available() if methods is None else methods
    names = {key(m.name): m.name for m in pool}
    found = difflib.get_close_matches(key(name), list(names), n=1, cutoff=0.6)
    return names[found[0]] if found else None


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
