"""Shared by the metrics: any Captum attribution to one map per example, ranking, curves."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from captum.attr import LayerAttribution
from torch import Tensor

from captum_gradeclip.attr.contract import TargetType, target_columns

PROTOCOLS = ("uniform", "paper")
MEASURES = ("score", "top1", "top5")


@dataclass
class PerturbationCurve:
    """A deletion or insertion curve per example.

    Attributes:
        fractions: ``(S,)`` fraction of pixels (or words) removed or inserted at each step,
            from 0.
        scores: ``(N, S)`` the measure after each step: the target's score, or 1/0 for a
            correct/incorrect zero-shot top-k prediction.
        auc: ``(N,)`` trapezoid area under ``scores`` over ``fractions``.

    Examples::

        >>> curve = cg.metrics.image_deletion(sim, pixel_values, maps, target=0, steps=4)
        >>> curve.fractions
        tensor([0.0000, 0.2500, 0.5000, 0.7500, 1.0000])
        >>> curve.scores.shape, curve.auc.shape
        (torch.Size([1, 5]), torch.Size([1]))
    """

    fractions: Tensor
    scores: Tensor
    auc: Tensor


def single(value: Tensor | tuple[Tensor, ...], argument: str) -> Tensor:
    """The tensor of a tensor or of a 1-tuple (Captum mirrors tuple inputs)."""
    if isinstance(value, tuple):
        if len(value) != 1:
            raise ValueError(f"`{argument}` must be a tensor or a 1-tuple of tensors; got {len(value)} items")
        value = value[0]
    if not isinstance(value, Tensor):
        raise TypeError(f"`{argument}` must be a tensor; got {type(value).__name__}")
    return value


def pixel_maps(
    attributions: Tensor | tuple[Tensor, ...],
    size: tuple[int, ...],
    channels: int | None = None,
    interpolate_mode: str = "bilinear",
) -> Tensor:
    """One map ``(N, H, W)`` per example from any image attribution, upsampled to ``size``.

    Accepts ``(N, 1, h, w)`` and ``(N, h, w)`` maps of any resolution (GradECLIP, the
    baselines, LayerGradCam after a reshape, ...), and pixel attributions
    ``(N, C, H, W)`` with the input's ``channels`` and ``size`` (IntegratedGradients,
    Occlusion, ...), summed over the channels. Upsampling uses
    :meth:`captum.attr.LayerAttribution.interpolate`.
    """
    a = single(attributions, "attributions").detach()
    a = a[:, None] if a.dim() == 3 else a
    if a.dim() != 4 or a.shape[0] == 0:
        raise ValueError(f"`attributions` must be (N, 1, h, w), (N, h, w) or (N, C, H, W); got {tuple(a.shape)}")
    if a.shape[1] != 1:
        if a.shape[1] == channels and tuple(a.shape[-2:]) == tuple(size):
            a = a.sum(1, keepdim=True)
        else:
            raise ValueError(
                "`attributions` must hold one map per example, (N, 1, h, w) or (N, h, w), or pixel "
                f"attributions (N, {channels}, {size[0]}, {size[1]}); got {tuple(a.shape)}. "
                "For maps of several targets pick one column, e.g. maps[:, [j]]"
            )
    if not torch.isfinite(a).all():
        raise ValueError("`attributions` contains NaN or infinite values")
    a = a.float()
    if tuple(a.shape[-2:]) != tuple(size):
        a = LayerAttribution.interpolate(a, tuple(size), interpolate_mode)
    return a[:, 0]


def token_scores(attributions: Tensor | tuple[Tensor, ...], shape: tuple[int, ...]) -> Tensor:
    """Per-token scores ``(N, L)`` from ``(N, L)`` scores or ``(N, L, D)`` embedding attributions (summed over D)."""
    a = single(attributions, "attributions").detach()
    if a.dim() == 3 and tuple(a.shape[:2]) == tuple(shape):
        a = a.sum(-1)
    if tuple(a.shape) != tuple(shape):
        raise ValueError(
            f"`attributions` must be (N, L) = {tuple(shape)} token scores or (N, L, D); got {tuple(a.shape)}"
        )
    if not torch.isfinite(a).all():
        raise ValueError("`attributions` contains NaN or infinite values")
    return a.float()


def ranks(values: Tensor, generator: torch.Generator) -> Tensor:
    """``(N, P)`` position of each entry in descending order (0 = largest); ties in random order."""
    n, p = values.shape
    shuffle = torch.rand(n, p, generator=generator, device=generator.device).to(values.device).argsort(-1)
    order = shuffle.gather(1, values.gather(1, shuffle).argsort(dim=-1, descending=True, stable=True))
    out = torch.empty_like(order)
    out.scatter_(1, order, torch.arange(p, device=values.device).expand(n, p))
    return out


def fractions(steps: int, protocol: str) -> Tensor:
    """``uniform``: ``steps`` equal steps from 0 to 1. ``paper``: 0.5% steps up to 50% (101 points)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"`protocol` must be one of {PROTOCOLS}; got {protocol!r}")
    if protocol == "paper":
        return torch.arange(101, dtype=torch.float64).div(200).float()
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"`steps` must be a positive int; got {steps!r}")
    return torch.linspace(0, 1, steps + 1)


def target_column(target: TargetType, n: int, m: int) -> Tensor:
    """``(N,)`` one output column per example; ``target`` is required."""
    if target is None:
        raise ValueError("`target` is required: the output column (e.g. the explained text) of each example")
    return target_columns(target, n, m)[0]


def measure_fn(measure: str) -> Callable[[Tensor, Tensor], Tensor]:
    """``(scores (B, M), column (B,)) -> (B,)``: the target's score, or top-k correctness."""
    if measure not in MEASURES:
        raise ValueError(f"`measure` must be one of {MEASURES}; got {measure!r}")
    if measure == "score":
        return lambda s, col: s.gather(1, col[:, None])[:, 0]
    k = int(measure[3:])

    def top_k(s: Tensor, col: Tensor) -> Tensor:
        return ((s > s.gather(1, col[:, None])).sum(1) < k).to(s.dtype)

    return top_k


def scores_2d(output: Any) -> Tensor:
    """A forward function's output as ``(B, M)``."""
    if not isinstance(output, Tensor):
        raise TypeError(f"the forward function must return a tensor; got {type(output).__name__}")
    return output[:, None] if output.dim() == 1 else output


def check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive int; got {batch_size!r}")


def curve(steps: Tensor, values: Tensor) -> PerturbationCurve:
    values = values.detach()
    return PerturbationCurve(steps, values, torch.trapezoid(values, steps.to(values), dim=-1))
