"""Captum's calling conventions, written once for every method (Grad-ECLIP and the baselines).

- :func:`resolve_wrapper`: the ``forward_func`` forms (the wrapper, its bound ``forward``, the wrapper
  inside ``nn.DataParallel``) and ``device_ids``;
- :func:`target_columns`: Captum's target forms with Captum's meaning, plus ``None`` (every column);
- :func:`format_inputs`: one input tensor or a 1-tuple, token ids that a perturbation turned into floats;
- :func:`check_blocks`: a clear error at construction when an explained block is not an attention block
  the adapter can read (Captum's invalid-module pattern);
- :func:`check_layer_input`: Captum's ``attribute_to_layer_input``;
- :func:`constructor_options` and :func:`check_options`: a method's options, and a clear error for others.

This module is public: a method or a metric outside the package imports it as the package's do.
"""

from __future__ import annotations

import inspect
import numbers
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from captum_gradeclip._compat import _format_additional_forward_args, _format_tensor_into_tuples, _is_tuple
from captum_gradeclip.wrappers import SimilarityWrapper

#: Captum's target forms (an int, a tuple index, a list of either per example, a tensor), or ``None``.
TargetType = int | tuple[int, ...] | Sequence[int] | Sequence[tuple[int, ...]] | Tensor | None

_TARGET_FORMS = (
    "an int (one column for every example), a 1-tuple (int,), a list of ints or of 1-tuples (one per "
    "example), a 0-d or 1-element integer tensor (broadcast), an N-element 1-D integer tensor (one per "
    "example), or None (every column)"
)

_FORWARD_FORMS = (
    "a captum_gradeclip similarity wrapper (ImageTextSimilarity, TextImageSimilarity or ImageClassification), "
    "its bound `forward`, or such a wrapper inside torch.nn.DataParallel"
)


def resolve_wrapper(forward_func: object, device_ids: Sequence[int] | None = None) -> SimilarityWrapper:
    """The similarity wrapper behind ``forward_func``.

    Args:
        forward_func: the wrapper, its bound ``forward``, or ``nn.DataParallel(wrapper)``.
        device_ids (list[int], optional): Captum's ``device_ids``. An explanation hooks the wrapped
            module and runs it on one device (the one ``DataParallel`` keeps the module on), so the
            only ids accepted are ``None`` and, for a ``DataParallel``, its own ``device_ids`` (which
            Captum would take from it anyway).

    Returns:
        The :class:`~captum_gradeclip.wrappers.SimilarityWrapper` module to explain.

    Raises:
        TypeError: ``forward_func`` is none of the accepted forms.
        ValueError: ``device_ids`` asks for a split the explanation cannot make.
    """
    own: list[int] | None = None  # a DataParallel's own device ids
    if isinstance(forward_func, nn.DataParallel):
        wrapper, own = forward_func.module, list(forward_func.device_ids)
    elif inspect.ismethod(forward_func) and isinstance(forward_func.__self__, SimilarityWrapper):
        wrapper = forward_func.__self__
        if forward_func.__func__ is not type(wrapper).forward:
            raise TypeError(
                f"`forward_func` must be {_FORWARD_FORMS}; got the bound method "
                f"{type(wrapper).__name__}.{forward_func.__name__}"
            )
    else:
        wrapper = forward_func
    if not isinstance(wrapper, SimilarityWrapper):
        inner = f" wrapping {type(wrapper).__name__}" if own is not None else ""
        raise TypeError(f"`forward_func` must be {_FORWARD_FORMS}; got {type(forward_func).__name__}{inner}")
    if device_ids is not None:
        if own is None or list(device_ids) != own:
            raise ValueError(
                f"`device_ids` {list(device_ids)!r} cannot be honoured: the explanation hooks the wrapped module "
                "and runs the whole batch on one device, so it never gathers layer outputs across devices. "
                "Leave `device_ids=None`" + (f" (or pass the DataParallel's own {own!r})" if own is not None else "")
            )
    return wrapper


def run_device(forward_func: object, wrapper: SimilarityWrapper, x: Tensor) -> torch.device:
    """Where the explanation runs: the wrapped module's device for a ``DataParallel``, else the input's."""
    if isinstance(forward_func, nn.DataParallel):
        param = next(wrapper.parameters(), None)
        if param is not None:
            return param.device
    return x.device


def format_inputs(
    wrapper: SimilarityWrapper, inputs: Tensor | tuple[Tensor, ...], additional_forward_args: Any
) -> tuple[bool, Tensor, tuple]:
    """``(is_tuple, x, extra)``: the one input tensor, detached, and the further forward arguments.

    Token ids that arrive as a floating-point tensor of whole numbers (Captum's ``NoiseTunnel`` adds its
    noise in floating point, also with ``stdevs=0.0``) are converted back to ids; any other value is
    refused, since noise on token ids has no meaning.
    """
    is_tuple = _is_tuple(inputs)
    inputs_t = _format_tensor_into_tuples(inputs)
    if len(inputs_t) != 1 or not isinstance(inputs_t[0], Tensor):
        raise TypeError(f"`inputs` must be one tensor or a 1-tuple of tensors; got {len(inputs_t)} items")
    x = inputs_t[0].detach()
    if wrapper.modality == "text" and x.is_floating_point():
        ids = x.round()
        if not torch.equal(ids, x):
            raise ValueError(
                "`inputs` are token ids, but the floating-point tensor given holds values that are not whole "
                "numbers. Token ids cannot take noise (NoiseTunnel with stdevs > 0 on a text wrapper): "
                "perturb the image side, or the words themselves (captum_gradeclip.metrics.robustness.word_swap)"
            )
        x = ids.long()
    extra = _format_additional_forward_args(additional_forward_args) or ()
    extra = tuple(a.detach() if isinstance(a, Tensor) else a for a in extra)
    return is_tuple, x, extra


def _index(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`target` must be {_TARGET_FORMS}; {what} is {type(value).__name__}")
    return int(value)


def _column(value: object, what: str) -> int:
    """An int, or a 1-tuple (Captum: a tuple indexes the output's trailing dimensions; ours is (N, M))."""
    if isinstance(value, tuple):
        if len(value) != 1:
            raise ValueError(
                "a tuple `target` indexes the output's dimensions after the batch; the wrapper's output "
                f"(N, M) has one, so a tuple must hold exactly one index (a column); {what} is {value!r}"
            )
        return _index(value[0], what)
    return _index(value, what)


def target_columns(target: TargetType, n: int, m: int) -> Tensor:
    """``(K, N)`` column indices for Captum's target forms: one row per requested target.

    ``target`` takes Captum's forms with Captum's meaning: an int or a 1-tuple ``(column,)`` for every
    example; a list of ints or of 1-tuples, one per example; a tensor with one element (0-d or not,
    broadcast) or a 1-D tensor with one element per example. A negative index counts from the end, as in
    Python and in Captum (``-1`` is the last column). ``None`` (every column, ``K = M``) is this
    package's extension.

    Raises:
        TypeError: a form Captum does not define (float, bool, a set, a string, ...).
        ValueError: the right form but the wrong length or an index outside ``-M..M-1``.
    """
    if target is None:
        return torch.arange(m)[:, None].expand(m, n)
    values = target if isinstance(target, (list, tuple)) else [target]
    values = [v for t in values for v in (t if isinstance(t, tuple) else (t,))]
    if any(isinstance(v, numbers.Integral) and not isinstance(v, bool) and abs(int(v)) >= 2**63 for v in values):
        # beyond int64 (target=10**20): torch would fail to even hold it
        raise ValueError(
            f"`target` must index the wrapper's {m} output columns (0..{m - 1}, or -{m}..-1 from the end); got {target}"
        )
    if isinstance(target, Tensor):
        if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
            raise TypeError(f"`target` must be {_TARGET_FORMS}; got a tensor of dtype {target.dtype}")
        if target.numel() == 1:
            column = torch.full((n,), int(target.item()), dtype=torch.long)
        elif target.dim() == 1 and target.numel() == n:
            column = target.detach().to("cpu", torch.long)
        else:
            raise ValueError(
                f"a `target` tensor must hold one index (broadcast) or one per example ({n}, 1-D); "
                f"got shape {tuple(target.shape)}"
            )
    elif isinstance(target, list):
        if len(target) != n:
            raise ValueError(f"`target` list must have one entry per example ({n}); got {len(target)}")
        column = torch.tensor([_column(t, f"entry {i}") for i, t in enumerate(target)], dtype=torch.long)
    elif isinstance(target, tuple):
        column = torch.full((n,), _column(target, "it"), dtype=torch.long)
    else:
        column = torch.full((n,), _index(target, "it"), dtype=torch.long)
    if ((column < -m) | (column >= m)).any():
        bad = sorted({int(c) for c in column if not -m <= c < m})
        raise ValueError(
            f"`target` must index the wrapper's {m} output columns (0..{m - 1}, or -{m}..-1 from the end); got {bad}"
        )
    return torch.where(column < 0, column + m, column)[None]  # from the end, as Python and Captum index


def check_layer_input(attribute_to_layer_input: object, method: str) -> None:
    """Captum's ``attribute_to_layer_input``: ``False`` (the only meaning here) or a clear error."""
    if attribute_to_layer_input is False:
        return
    if attribute_to_layer_input is True:
        raise ValueError(
            f"attribute_to_layer_input=True is not available for {method}: the method is defined inside the "
            "attention block (from its queries, keys and values, or the attention it computes, and the score's "
            "gradient there), not on a layer's input or output tensor, so there is no layer input to attribute "
            "to. Leave attribute_to_layer_input=False"
        )
    raise TypeError(f"`attribute_to_layer_input` must be a bool; got {type(attribute_to_layer_input).__name__}")


def module_name(model: nn.Module, module: nn.Module) -> str:
    """The dotted name of ``module`` inside ``model`` (``"?"`` when it is not there)."""
    return next((name for name, m in model.named_modules() if m is module), "?")


def check_blocks(wrapper: SimilarityWrapper, blocks: Sequence[nn.Module], method: str) -> None:
    """A TypeError naming the layer when an explained block is not an attention block the adapter can read.

    The check hooks each block and removes the hooks again, with no forward pass: a module put in place of
    an attention block (Captum's invalid-module pattern) is refused at construction, not halfway through
    an explanation.
    """
    for block in blocks:
        try:
            with wrapper.adapter.probe(block, lambda _record, o: o):
                pass
        except Exception as error:  # any failure to hook it means the adapter cannot read it
            raise TypeError(
                f"{method} cannot explain the layer `{module_name(wrapper.model, block)}` "
                f"({type(block).__name__}): it is not an attention block the {wrapper.adapter.loader_name} "
                f"adapter can read ({type(error).__name__}: {error})"
            ) from error


def renamed_flag(new: bool | None, old: bool | None, new_name: str, old_name: str, default: bool) -> bool:
    """Captum's name for a switch, with the old name as a deprecated alias (FutureWarning)."""
    if old is not None:
        warnings.warn(f"`{old_name}` is deprecated; use Captum's name `{new_name}`", FutureWarning, stacklevel=3)
        if new is not None and bool(new) != bool(old):
            raise ValueError(f"`{new_name}`={new!r} and its deprecated alias `{old_name}`={old!r} disagree")
        return bool(old)
    return default if new is None else bool(new)


def constructor_options(cls: type) -> tuple[str, ...] | None:
    """The names ``cls``'s constructor takes after ``forward_func``, or ``None`` where it takes ``**kwargs``."""
    init = cls.__init__  # type: ignore[misc]  # mypy calls it unsound on a type; only its signature is read
    parameters = list(inspect.signature(init).parameters.values())[2:]  # without self, forward_func
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return tuple(p.name for p in parameters if p.kind is not inspect.Parameter.VAR_POSITIONAL)


def check_options(cls: type, options: dict[str, Any]) -> None:
    """A TypeError naming ``cls``, the options it does not take and those it does (the keyword arguments of
    its constructor), where ``options`` holds a name the constructor does not take.

    Examples::

        >>> check_options(GradECLIP, {"layers": 2})   # known: nothing happens
        >>> check_options(GradECLIP, {"n_mask": 5})
        Traceback (most recent call last):
            ...
        TypeError: GradECLIP has no option 'n_mask'; its options: layer, device_ids, mode, layers, ...
    """
    valid = constructor_options(cls)
    if valid is None:
        return
    unknown = [name for name in options if name not in valid]
    if unknown:
        names, options_text = ", ".join(repr(name) for name in unknown), ", ".join(valid) or "none"
        plural = "s" if len(unknown) > 1 else ""
        raise TypeError(f"{cls.__name__} has no option{plural} {names}; its options: {options_text}")
