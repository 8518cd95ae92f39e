"""One-line Captum robustness metrics on any of our methods: ``sensitivity_max`` and ``infidelity``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from captum.attr import Attribution
from captum.metrics import infidelity as captum_infidelity
from captum.metrics import sensitivity_max
from torch import Tensor

from captum_gradeclip.attr.contract import TargetType, resolve_wrapper
from captum_gradeclip.metrics._common import pixel_maps, single, token_scores
from captum_gradeclip.wrappers import SimilarityWrapper


def _wrapper(explainer: Attribution | SimilarityWrapper) -> SimilarityWrapper:
    if isinstance(explainer, SimilarityWrapper):
        return explainer
    try:
        return resolve_wrapper(getattr(explainer, "forward_func", None))
    except TypeError as error:
        raise TypeError(
            "`explainer` must be a Captum attribution built on a captum_gradeclip similarity wrapper "
            f"(or, for infidelity, the wrapper itself); got {type(explainer).__name__}"
        ) from error


def _words(sim: SimilarityWrapper, ids: Tensor) -> Tensor:
    positions = torch.arange(ids.shape[1], device=ids.device)[None]
    return (positions > 0) & (positions < sim.adapter.eos_index(ids, None).to(ids.device)[:, None])


def word_swap(sim: SimilarityWrapper, seed: int = 0) -> Callable[..., Tensor | tuple[Tensor, ...]]:
    """A ``sensitivity_max`` perturbation for token ids: one random word of each text becomes
    another word drawn from the batch (SOS, EOS and padding stay)."""
    generator = torch.Generator().manual_seed(seed)

    def perturb(inputs: Tensor | tuple[Tensor, ...], _radius: float | None = None) -> Tensor | tuple[Tensor, ...]:
        ids = single(inputs, "inputs")
        words = _words(sim, ids)
        pool = ids[words]
        if pool.numel() == 0:
            return inputs
        n = ids.shape[0]
        pick = (torch.rand(n, generator=generator) * words.sum(1).cpu()).long().to(ids.device)
        chosen = words & (words.long().cumsum(1) - 1 == pick[:, None])
        new = pool[torch.randint(pool.numel(), (n,), generator=generator).to(ids.device)]
        out = torch.where(chosen, new[:, None], ids)
        return (out,) if isinstance(inputs, tuple) else out

    return perturb


def sensitivity(
    explainer: Attribution,
    inputs: Tensor | tuple[Tensor, ...],
    target: TargetType = None,
    additional_forward_args: Any = None,
    **kwargs: Any,
) -> Tensor:
    r"""``captum.metrics.sensitivity_max`` of ``explainer.attribute``: how much the explanation
    changes, at most, under small input perturbations (lower is more stable).

    Images use Captum's default perturbation (uniform noise of ``perturb_radius``); token
    ids use :func:`word_swap`. Any other ``sensitivity_max`` argument passes through.

    Args:
        explainer (Attribution): GradECLIP or any baseline (or Captum method) on one of our wrappers.
        inputs (Tensor or tuple[Tensor]): what ``explainer.attribute`` takes.
        target, additional_forward_args: as for ``explainer.attribute``.
        **kwargs: ``n_perturb_samples``, ``perturb_radius``, ``perturb_func``, ``norm_ord``, ...

    Returns:
        *Tensor* ``(N,)``.

    Examples::

        >>> sensitivity(GradECLIP(sim), pixel_values, target=0, n_perturb_samples=5).shape
        torch.Size([1])
    """
    sim = _wrapper(explainer)
    if sim.modality == "text":
        kwargs.setdefault("perturb_func", word_swap(sim))
    return sensitivity_max(
        explainer.attribute, inputs, target=target, additional_forward_args=additional_forward_args, **kwargs
    )


def infidelity(
    explainer: Attribution | SimilarityWrapper,
    inputs: Tensor | tuple[Tensor, ...],
    target: TargetType,
    additional_forward_args: Any = None,
    *,
    attributions: Tensor | tuple[Tensor, ...] | None = None,
    noise_std: float = 0.1,
    drop_probability: float = 0.3,
    n_perturb_samples: int = 10,
    normalize: bool = True,
    seed: int = 0,
    **kwargs: Any,
) -> Tensor:
    r"""``captum.metrics.infidelity`` of an explanation, in the input's own shape.

    Image maps are upsampled to the image with
    :meth:`~captum.attr.LayerAttribution.interpolate` and spread evenly over the
    channels (pixel attributions of the input's shape are used as they are); the
    perturbation is Gaussian noise :math:`I \sim N(0, \sigma^2)` with :math:`x - I`
    scored. Token scores are perturbed by turning each word, with probability
    ``drop_probability``, into the padding id (:math:`I` = 1 there). With
    ``normalize=True`` (default) the map's scale does not matter. Lower is better.

    Args:
        explainer (Attribution or wrapper): an attribution on one of our wrappers (its
            ``attribute`` gives the explanation unless ``attributions`` is given), or the
            wrapper itself with ``attributions``.
        inputs (Tensor or tuple[Tensor]): pixel values or token ids.
        target (int, list[int] or Tensor): the explained column.
        additional_forward_args (optional): for text, ``(attention_mask,)``.
        attributions (Tensor, optional): any Captum attribution of ``inputs`` (maps,
            pixel or token attributions).
        noise_std (float, optional): :math:`\sigma` of the image noise. Default: 0.1.
        drop_probability (float, optional): for text. Default: 0.3.
        n_perturb_samples (int, optional): Default: 10.
        normalize (bool, optional): Captum's scale normalisation. Default: True.
        seed (int, optional): Default: 0.
        **kwargs: passed to ``captum.metrics.infidelity`` (e.g. ``max_examples_per_batch``).

    Returns:
        *Tensor* ``(N,)``.

    Examples::

        >>> infidelity(GradECLIP(sim), pixel_values, target=0).shape
        torch.Size([1])
    """
    sim = _wrapper(explainer)
    x = single(inputs, "inputs").detach()
    if attributions is None:
        if isinstance(explainer, SimilarityWrapper):
            raise ValueError("`attributions` is required when `explainer` is the wrapper itself")
        attributions = explainer.attribute(x, target=target, additional_forward_args=additional_forward_args)
    generator = torch.Generator().manual_seed(seed)
    if sim.modality == "image":
        attr = single(attributions, "attributions").detach().to(x)
        if attr.shape != x.shape:  # a map: upsampled and spread evenly over the channels
            maps = pixel_maps(attr, tuple(x.shape[-2:]), channels=x.shape[1])
            attr = (maps[:, None] / x.shape[1]).expand_as(x)

        def perturb(batch: Tensor) -> tuple[Tensor, Tensor]:
            noise = torch.randn(batch.shape, generator=generator).to(batch) * noise_std
            return noise, batch - noise

    else:
        attr = token_scores(attributions, tuple(x.shape)).to(x.device)
        pad = getattr(sim.adapter, "pad_token_id", lambda: None)()
        if pad is None:
            raise ValueError("the model's config names no padding id, which the text perturbation needs")

        def perturb(batch: Tensor) -> tuple[Tensor, Tensor]:
            drop = _words(sim, batch) & (torch.rand(batch.shape, generator=generator) < drop_probability).to(
                batch.device
            )
            return drop.float(), batch.masked_fill(drop, pad)

    out = captum_infidelity(
        sim,
        perturb,
        x,
        attr,
        additional_forward_args=additional_forward_args,
        target=target,
        n_perturb_samples=n_perturb_samples,
        normalize=normalize,
        **kwargs,
    )
    return out.detach()
