"""Image deletion and insertion curves (Petsiuk et al., 2018; the Grad-ECLIP paper's protocol)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from captum_gradeclip.attr.contract import TargetType
from captum_gradeclip.metrics._common import (
    PerturbationCurve,
    check_batch_size,
    curve,
    fractions,
    measure_fn,
    pixel_maps,
    ranks,
    scores_2d,
    single,
    target_column,
)

BASELINES = ("random", "mean", "blur", "black")


def gaussian_blur(images: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of ``(N, C, H, W)`` images, kernel radius ``ceil(3 sigma)``, edges replicated."""
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    c = images.shape[1]
    out = F.pad(images, (radius, radius, 0, 0), mode="replicate")
    out = F.conv2d(out, kernel.reshape(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    out = F.pad(out, (0, 0, radius, radius), mode="replicate")
    return F.conv2d(out, kernel.reshape(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def baseline_images(
    inputs: Tensor,
    baseline: str | float | Tensor,
    normalization: tuple[Sequence[float], Sequence[float]] | None = None,
    blur_sigma: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """What removed pixels become, one image per input ``(N, C, H, W)``.

    Args:
        inputs (Tensor): ``(N, C, H, W)`` model inputs.
        baseline (str, float or Tensor): ``"random"`` (uniform noise over the pixel
            range, the Grad-ECLIP paper's), ``"mean"`` (each image's mean colour),
            ``"blur"`` (a Gaussian blur of the image), ``"black"``, a constant, or a
            tensor broadcastable to ``inputs``.
        normalization (tuple, optional): the ``(mean, std)`` per channel with which the
            inputs were normalised; ``"random"`` and ``"black"`` then live in pixel
            space [0, 1] and are normalised the same way. Default: inputs are pixels in [0, 1].
        blur_sigma (float, optional): Default: ``max(H, W) / 45`` (5 pixels at 224).
        generator (torch.Generator, optional): for ``"random"``.

    Examples::

        >>> baseline_images(pixel_values, "blur").shape
        torch.Size([1, 3, 64, 64])
        >>> black = baseline_images(pixel_values, "black", normalization=([0.5] * 3, [0.25] * 3))
        >>> black[0, :, 0, 0]  # (0 - mean) / std
        tensor([-2., -2., -2.])
    """
    _, c, h, w = inputs.shape
    if isinstance(baseline, Tensor) or (isinstance(baseline, (int, float)) and not isinstance(baseline, bool)):
        return torch.as_tensor(baseline, dtype=inputs.dtype, device=inputs.device).expand_as(inputs)
    if baseline not in BASELINES:
        raise ValueError(f"`baseline` must be one of {BASELINES}, a number or a tensor; got {baseline!r}")
    if baseline == "mean":
        return inputs.mean((2, 3), keepdim=True).expand_as(inputs)
    if baseline == "blur":
        return gaussian_blur(inputs, blur_sigma if blur_sigma is not None else max(h, w) / 45)
    if baseline == "black":
        pixels = torch.zeros_like(inputs)
    else:
        device = generator.device if generator is not None else inputs.device
        pixels = torch.rand(inputs.shape, generator=generator, device=device).to(inputs)
    if normalization is None:
        return pixels
    mean, std = (torch.as_tensor(v, dtype=inputs.dtype, device=inputs.device).reshape(-1, 1, 1) for v in normalization)
    if mean.shape[0] not in (1, c) or std.shape[0] not in (1, c):
        raise ValueError(f"`normalization` must be (mean, std) with 1 or {c} values each")
    return (pixels - mean) / std


def _forward_args(extra: tuple, index: Tensor, n: int) -> tuple:
    """Per-example tensors of ``additional_forward_args`` follow their example."""
    return tuple(a[index] if isinstance(a, Tensor) and a.dim() > 0 and a.shape[0] == n else a for a in extra)


def _image_curve(
    insert: bool,
    forward_func: Callable[..., Tensor],
    inputs: Tensor | tuple[Tensor, ...],
    attributions: Tensor | tuple[Tensor, ...],
    target: TargetType,
    additional_forward_args: Any,
    *,
    steps: int,
    protocol: str,
    baseline: str | float | Tensor,
    measure: str,
    normalization: tuple[Sequence[float], Sequence[float]] | None,
    blur_sigma: float | None,
    batch_size: int,
    interpolate_mode: str,
    seed: int,
) -> PerturbationCurve:
    x = single(inputs, "inputs").detach()
    if x.dim() != 4 or not x.is_floating_point() or x.shape[0] == 0:
        raise ValueError(f"`inputs` must be a floating (N, C, H, W) tensor; got {tuple(x.shape)}")
    check_batch_size(batch_size)
    n, c, h, w = x.shape
    maps = pixel_maps(attributions, (h, w), channels=c, interpolate_mode=interpolate_mode).to(x.device)
    if maps.shape[0] != n:
        raise ValueError(f"`attributions` must have one map per input ({n}); got {maps.shape[0]}")
    score = measure_fn(measure)
    fr = fractions(steps, protocol).to(x.device)
    generator = torch.Generator().manual_seed(seed)
    order = ranks(maps.reshape(n, h * w), generator).reshape(n, 1, h, w)
    fill = baseline_images(x, baseline, normalization, blur_sigma, generator)
    counts = (fr.double() * h * w).round().long()
    extra = additional_forward_args if isinstance(additional_forward_args, tuple) else (additional_forward_args,)
    extra = () if additional_forward_args is None else extra
    columns = None
    total = n * len(fr)
    values = torch.empty(total, dtype=torch.float32, device=x.device)
    with torch.no_grad():
        for start in range(0, total, batch_size):  # every step of every image, batch_size at a time
            pair = torch.arange(start, min(start + batch_size, total), device=x.device)
            i, s = pair // len(fr), pair % len(fr)
            changed = order[i] < counts[s].reshape(-1, 1, 1, 1)
            batch = torch.where(changed, x[i], fill[i]) if insert else torch.where(changed, fill[i], x[i])
            out = scores_2d(forward_func(batch, *_forward_args(extra, i, n)))
            if columns is None:
                columns = target_column(target, n, out.shape[1]).to(x.device)
            values[pair] = score(out, columns[i]).float()
    return curve(fr, values.reshape(n, len(fr)))


def image_deletion(
    forward_func: Callable[..., Tensor],
    inputs: Tensor | tuple[Tensor, ...],
    attributions: Tensor | tuple[Tensor, ...],
    target: TargetType,
    additional_forward_args: Any = None,
    *,
    steps: int = 20,
    protocol: str = "uniform",
    baseline: str | float | Tensor = "random",
    measure: str = "score",
    normalization: tuple[Sequence[float], Sequence[float]] | None = None,
    blur_sigma: float | None = None,
    batch_size: int = 256,
    interpolate_mode: str = "bilinear",
    seed: int = 0,
) -> PerturbationCurve:
    r"""Deletion: remove the most relevant pixels first and re-score after every step.

    The map is upsampled to the image with
    :meth:`captum.attr.LayerAttribution.interpolate` and ranks the pixels (ties in a
    seeded random order). At step k the top ``fractions[k]`` of the pixels are replaced
    by the baseline and the image is scored again. A faithful map makes the score fall
    fast: lower AUC is better. All steps of all images go through ``forward_func`` in
    batches of ``batch_size``.

    Args:
        forward_func (Callable): ``(N, C, H, W) -> (N, M)`` scores, e.g. an
            :class:`ImageTextSimilarity` (its M texts are the zero-shot prompt set).
        inputs (Tensor or tuple[Tensor]): ``(N, C, H, W)`` images.
        attributions (Tensor or tuple[Tensor]): any Captum image attribution, one per
            image: ``(N, 1, h, w)`` / ``(N, h, w)`` maps or ``(N, C, H, W)`` pixel attributions.
        target (int, list[int] or Tensor): the explained column per image.
        additional_forward_args (optional): passed on; per-image tensors follow their image.
        steps (int, optional): number of equal steps from 0 to 100%. Default: 20.
        protocol (str, optional): ``"uniform"`` (``steps`` steps to 100%) or ``"paper"``
            (0.5% steps up to 50%, so the fractions, and the AUC's x axis, stop at 0.5).
        baseline (str, float or Tensor, optional): ``"random"`` (default, the paper's),
            ``"mean"``, ``"blur"``, ``"black"``, a constant or a tensor; see :func:`baseline_images`.
        measure (str, optional): ``"score"`` (the target's output, default), ``"top1"``
            or ``"top5"`` (1 when the target is among the k best columns).
        normalization (tuple, optional): ``(mean, std)`` of the input normalisation, for
            the ``"random"`` and ``"black"`` baselines.
        blur_sigma (float, optional): for ``"blur"``; default ``max(H, W) / 45``.
        batch_size (int, optional): perturbed images per forward pass. Default: 256.
        interpolate_mode (str, optional): upsampling of the map. Default: ``"bilinear"``.
        seed (int, optional): seeds tie-breaking and the random baseline. Default: 0.

    Returns:
        :class:`PerturbationCurve` with ``fractions (S,)``, ``scores (N, S)`` and ``auc (N,)``.

    Examples::

        >>> maps = GradECLIP(sim).attribute(pixel_values, target=0)
        >>> curve = image_deletion(sim, pixel_values, maps, target=0)
        >>> curve.fractions.shape, curve.scores.shape, curve.auc.shape  # 20 steps: 21 points
        (torch.Size([21]), torch.Size([1, 21]), torch.Size([1]))
    """
    return _image_curve(
        False,
        forward_func,
        inputs,
        attributions,
        target,
        additional_forward_args,
        steps=steps,
        protocol=protocol,
        baseline=baseline,
        measure=measure,
        normalization=normalization,
        blur_sigma=blur_sigma,
        batch_size=batch_size,
        interpolate_mode=interpolate_mode,
        seed=seed,
    )


def image_insertion(
    forward_func: Callable[..., Tensor],
    inputs: Tensor | tuple[Tensor, ...],
    attributions: Tensor | tuple[Tensor, ...],
    target: TargetType,
    additional_forward_args: Any = None,
    *,
    steps: int = 20,
    protocol: str = "uniform",
    baseline: str | float | Tensor = "blur",
    measure: str = "score",
    normalization: tuple[Sequence[float], Sequence[float]] | None = None,
    blur_sigma: float | None = None,
    batch_size: int = 256,
    interpolate_mode: str = "bilinear",
    seed: int = 0,
) -> PerturbationCurve:
    r"""Insertion: start from the baseline image and put the most relevant pixels back first.

    The mirror of :func:`image_deletion` (same arguments): a faithful map makes the
    score rise fast, so higher AUC is better. The default start is a blurred image
    (``baseline="blur"``); ``"black"`` is the other common choice.

    Returns:
        :class:`PerturbationCurve` with ``fractions (S,)``, ``scores (N, S)`` and ``auc (N,)``.

    Examples::

        >>> curve = image_insertion(sim, pixel_values, maps, target=0, baseline="black")
        >>> curve.auc.shape
        torch.Size([1])
    """
    return _image_curve(
        True,
        forward_func,
        inputs,
        attributions,
        target,
        additional_forward_args,
        steps=steps,
        protocol=protocol,
        baseline=baseline,
        measure=measure,
        normalization=normalization,
        blur_sigma=blur_sigma,
        batch_size=batch_size,
        interpolate_mode=interpolate_mode,
        seed=seed,
    )
