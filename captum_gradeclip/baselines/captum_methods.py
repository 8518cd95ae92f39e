"""Captum's own attribution classes as registered methods, with the package's shapes and guarantees.

Each class here delegates to one of Captum's classes on the same wrapper and brings its result to the
patch grid, so that Captum's methods sit beside Grad-ECLIP in the command line
(``explain --method captum:IntegratedGradients``), in the result store and in the quality benchmark.

- **Pixel methods** (``IntegratedGradients``, ``Occlusion``, ``FeatureAblation``, ``Saliency``,
  ``InputXGradient``) attribute to the pixels ``(N, C, H, W)``; :func:`pool_to_patches` sums the absolute
  values over the channels and over each patch: one number per patch token, ``(N, h, w)``.
- **LayerGradCam** runs on the image tower's patch embedding (the convolution whose kernel and stride are
  the patch size, found by :func:`patch_embedding`); its output is already on the patch grid.
- **Text**: ``captum:IntegratedGradients`` explains texts with Captum's ``LayerIntegratedGradients`` over
  the token embeddings (:func:`token_embedding`), and a word's score is the attribution summed over the
  embedding dimension (as Captum's text tutorials do; signed, not normalised). The other methods perturb or
  differentiate pixels: token ids have none, so they explain images only.

Settings follow Captum's defaults (:data:`CAPTUM_SETTINGS` states them): IntegratedGradients with
``n_steps=32`` (Gauss-Legendre) from a zero baseline in the normalised input space, which is the processor's
mean colour; Occlusion with one patch as window and as stride; FeatureAblation with one feature group per
patch; both with a zero baseline; Saliency with ``abs=True``; LayerGradCam with ``relu_attributions=False``.
On the text side the baseline replaces every word (the tokens that get scores) by the padding token and keeps
the start and end tokens, as in Captum's text tutorials.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import MappingProxyType
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from captum.attr import (
    Attribution,
    FeatureAblation,
    InputXGradient,
    IntegratedGradients,
    LayerGradCam,
    LayerIntegratedGradients,
    Occlusion,
    Saliency,
)
from torch import Tensor, nn

from captum_gradeclip.adapters import thread_owned
from captum_gradeclip.attr.base import SimilarityAttribution
from captum_gradeclip.wrappers import ExplainContext, SimilarityWrapper

#: What the quality table's notes say about the settings (one line per method).
CAPTUM_SETTINGS = (
    "Captum's methods run with Captum's defaults: IntegratedGradients with 32 steps (Gauss-Legendre) from a zero "
    "baseline in the normalised input space (the processor's mean colour); Occlusion with one patch as window and "
    "stride, FeatureAblation with one feature group per patch, both with a zero baseline; Saliency with abs=True; "
    "InputXGradient; LayerGradCam on the patch embedding, without ReLU. Pixel attributions are pooled to the patch "
    "grid by the sum of absolute values over each patch (and the channels). Text: LayerIntegratedGradients over the "
    "token embeddings, 32 steps, from the words replaced by padding; a word's score is the sum over the embedding "
    "dimension."
)


def pool_to_patches(attributions: Tensor, grid: tuple[int, int]) -> Tensor:
    """Pixel attributions ``(N, C, H, W)`` to one score per patch ``(N, h, w)``: the sum of absolute values
    over the channels and the pixels of each patch.

    The patch is ``(H // h, W // w)`` pixels; rows and columns past ``h`` and ``w`` patches (which a
    patch embedding with that stride never reads) are left out.

    Args:
        attributions (Tensor): ``(N, C, H, W)`` pixel attributions.
        grid (tuple[int, int]): the patch grid ``(h, w)``.

    Returns:
        *Tensor* ``(N, h, w)``.

    Examples::

        >>> from captum_gradeclip.baselines.captum_methods import pool_to_patches
        >>> a = torch.tensor([[[[1.0, -2.0, 0.0, 0.0], [3.0, 4.0, 0.0, -1.0]]]])  # (1, 1, 2, 4): two 2x2 patches
        >>> pool_to_patches(a, (1, 2))
        tensor([[[10.,  1.]]])
    """
    if attributions.dim() != 4:
        raise ValueError(f"`attributions` must be (N, C, H, W); got shape {tuple(attributions.shape)}")
    h, w = grid
    patch = (attributions.shape[-2] // h, attributions.shape[-1] // w)
    per_pixel = attributions.abs().sum(1, keepdim=True)
    return F.avg_pool2d(per_pixel, kernel_size=patch, stride=patch, divisor_override=1)[:, 0, :h, :w]


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def patch_embedding(sim: SimilarityWrapper) -> nn.Conv2d:
    """The image tower's patch embedding: the one ``Conv2d`` that reads the image's channels with the adapter's
    patch size as kernel and stride. A TypeError naming what was looked for when the model has none (a ResNet,
    whose grid comes out of convolution stages) or several."""
    adapter = sim.adapter
    patch, channels = adapter.patch_size(), adapter.num_channels()
    found = [
        m
        for m in sim.model.modules()
        if isinstance(m, nn.Conv2d)
        and m.in_channels == channels
        and _pair(m.kernel_size) == _pair(m.stride) == _pair(patch)
    ]
    if len(found) != 1:
        raise TypeError(
            f"captum:LayerGradCam explains the patch embedding (a Conv2d over {channels} channels with kernel and "
            f"stride {tuple(patch)}), and this {adapter.loader_name} model has "
            f"{'no patch embedding' if not found else f'{len(found)} of them'}: its patch grid does not come from one "
            "patch projection"
        )
    return found[0]


def token_embedding(sim: SimilarityWrapper) -> nn.Embedding:
    """The text tower's token embedding: the one ``nn.Embedding`` with the adapter's vocabulary size. A TypeError
    when the adapter does not know the vocabulary size, or the model has no such embedding or several."""
    adapter = sim.adapter
    vocab = adapter.text_vocab_size()
    found = [m for m in sim.model.modules() if isinstance(m, nn.Embedding) and m.num_embeddings == vocab]
    if vocab is None or len(found) != 1:
        raise TypeError(
            f"captum:IntegratedGradients explains texts through the token embedding (an nn.Embedding over the "
            f"vocabulary of {vocab} tokens), and this {adapter.loader_name} model has {len(found)}"
        )
    return found[0]


@contextlib.contextmanager
def relayed(layer: nn.Module) -> Iterator[nn.Module]:
    """A private ``nn.Identity`` that ``layer``'s output passes through, in this thread only, while the body runs.

    Captum's layer methods hook the layer they are given: on a model shared between threads, hooks on ``layer``
    itself would act in every thread's forward (LayerIntegratedGradients' hook even replaces the layer's output).
    Given the relay instead, Captum hooks a module that no other thread runs; the one hook on ``layer`` routes its
    output through the relay and is :func:`~captum_gradeclip.adapters.thread_owned`, a pass-through elsewhere. The
    relay returns its input unchanged, so what Captum computes at it equals what it computes at ``layer``.

    Examples::

        >>> from captum_gradeclip.baselines.captum_methods import relayed
        >>> layer, seen = nn.Linear(2, 2), []
        >>> with relayed(layer) as relay:
        ...     handle = relay.register_forward_hook(lambda _m, _a, out: seen.append(out.shape))
        ...     _ = layer(torch.zeros(1, 2))
        >>> seen, len(layer._forward_hooks)
        ([torch.Size([1, 2])], 0)
    """
    relay = nn.Identity()
    handle = layer.register_forward_hook(thread_owned(lambda _module, _args, output: relay(output)))
    try:
        yield relay
    finally:
        handle.remove()


class CaptumAttribution(SimilarityAttribution):
    """Base of the Captum methods: one Captum call per target column, pixel attributions pooled to the grid.

    A subclass names :attr:`captum_class` and the keyword arguments of its ``attribute``
    (:meth:`_attribute_kwargs`); images go through :func:`pool_to_patches`.
    """

    modalities: ClassVar[tuple[str, ...]] = ("image",)
    pixel_maps = True
    reads_explained_block = False  # Captum's methods read the inputs (or an embedding) and the scores only
    #: The Captum class this method runs.
    captum_class: ClassVar[type[Attribution]]
    #: Whether Captum differentiates the inputs themselves (then they are handed over requiring grad).
    input_grad: ClassVar[bool] = False
    #: Why the method does not explain texts (the quality table's n/a reason).
    why_not_text: ClassVar[str] = (
        "it attributes to pixels, and token ids have none; captum:IntegratedGradients explains texts "
        "(LayerIntegratedGradients over the token embeddings)"
    )
    loader_notes = MappingProxyType({"resnet": "yes, pooled to the attention pool's grid"})

    def _captum(self, relay: nn.Module | None = None) -> Attribution:
        """The Captum object; ``relay``: the thread's relay of :attr:`layer` (:func:`relayed`) for a layer method."""
        return self.captum_class(self.similarity)

    def _relay(self) -> contextlib.AbstractContextManager[nn.Module | None]:
        """:func:`relayed` of the method's layer for a layer method, else nothing."""
        layer = getattr(self, "layer", None)
        return contextlib.nullcontext() if layer is None else relayed(layer)

    def _attribute_kwargs(self, inputs: Tensor, ctx: ExplainContext) -> dict[str, Any]:
        return {}

    def _maps(self, inputs: Tensor, extra: tuple, columns: Tensor, ctx: ExplainContext) -> Tensor:
        kwargs = self._attribute_kwargs(inputs, ctx)
        x = inputs.detach().requires_grad_(self.input_grad)  # never the caller's tensor: Captum switches its flag
        maps = []
        with self._relay() as relay:
            method = self._captum(relay)
            for column in columns:  # (N,) targets, one Captum call each
                attribution = method.attribute(x, target=column.tolist(), **kwargs)
                # the input's dtype: Captum's Occlusion divides by its window counts in float32 (`.float()`)
                maps.append(self._to_grid(attribution.detach().to(x.dtype), ctx))
        return torch.stack(maps, dim=1)  # (N, K, h, w)

    def _to_grid(self, attribution: Tensor, ctx: ExplainContext) -> Tensor:
        return pool_to_patches(attribution, ctx.image_grid())


def score_difference_tolerance(scores: Tensor, inputs: Tensor, grid: tuple[int, int], ulps: float = 32.0) -> float:
    """The rounding a map of :attr:`~captum_gradeclip.SimilarityAttribution.score_differences` can carry: ``ulps``
    units of the scores' dtype in the largest ``|score|``, times the channels and pixels a patch sums.

    Each patch's value is ``|f(x) - f(x')|`` summed over its ``C * ph * pw`` pixels; ``f(x)`` and ``f(x')`` are
    each rounded to a few units in their last place of ``|score|``, however small their difference: two correct
    computations of the map (another layout, another dtype) differ by up to this much in every patch, a bound that
    a fraction of the patch's own value (tiny where the occlusion changes little) does not give.

    Args:
        scores (Tensor): the scores of ``inputs`` (any shape); their dtype sets the unit.
        inputs (Tensor): ``(N, C, H, W)`` pixels.
        grid (tuple[int, int]): the patch grid ``(h, w)``.
        ulps (float, optional): units in the last place allowed for each score (a forward pass through a deep
            model rounds many times). Default: 32.

    Returns:
        *float*: an absolute tolerance for the maps.

    Examples::

        >>> from captum_gradeclip.baselines.captum_methods import score_difference_tolerance
        >>> t = score_difference_tolerance(torch.tensor([0.5, -1.0]), torch.zeros(1, 3, 32, 32), (4, 4))
        >>> round(t / (32 * torch.finfo(torch.float32).eps * 1.0 * 3 * 8 * 8), 6)
        1.0
    """
    if inputs.dim() != 4:
        raise ValueError(f"`inputs` must be (N, C, H, W); got shape {tuple(inputs.shape)}")
    _, channels, height, width = inputs.shape
    values = channels * (height // grid[0]) * (width // grid[1])
    return float(ulps * torch.finfo(scores.dtype).eps * scores.detach().abs().max() * values)


def _positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive int; got {value!r}")


class CaptumIntegratedGradients(CaptumAttribution):
    """Captum's ``IntegratedGradients`` on images, ``LayerIntegratedGradients`` over the token embeddings on texts.

    Images: the pixel attributions from a zero baseline (the processor's mean colour), pooled to the patch grid
    (:func:`pool_to_patches`), ``(N, 1, h, w)``. Texts: the token embeddings' attributions from the words replaced
    by padding (start and end tokens kept), summed over the embedding dimension, ``(N, L)``; start, end and
    padding score 0. Captum's ``LayerIntegratedGradients`` replaces its layer's output by the scaled embeddings: it
    runs at a private relay of the token embedding (:func:`relayed`), so no other thread's forward sees that.

    Args:
        forward_func (ImageTextSimilarity or TextImageSimilarity): the wrapper to explain.
        n_steps (int, optional): integration steps. Default: 32.
        method (str, optional): Captum's integration rule. Default: ``"gausslegendre"`` (Captum's).
        internal_batch_size (int, optional): Captum's: how many scaled inputs go through one forward pass.
            Default: None (all ``n_steps`` times the batch at once).

    Examples::

        >>> from captum_gradeclip.baselines.captum_methods import CaptumIntegratedGradients
        >>> CaptumIntegratedGradients(sim, n_steps=8).attribute(pixel_values, target=0).shape
        torch.Size([1, 1, 8, 8])
        >>> ids.shape  # three texts of five tokens: one score per token and text
        torch.Size([3, 5])
        >>> CaptumIntegratedGradients(tsim, n_steps=8).attribute(ids, target=0, additional_forward_args=(mask,)).shape
        torch.Size([3, 5])
    """

    method_name = "captum:IntegratedGradients"
    listing_order = 13
    quick_options = MappingProxyType({"n_steps": 4})
    loader_notes = MappingProxyType(
        {**CaptumAttribution.loader_notes, "text": "as `LayerIntegratedGradients` over the token embeddings"}
    )

    modalities = ("image", "text")
    captum_class = IntegratedGradients

    def __init__(
        self,
        forward_func: SimilarityWrapper,
        *,
        n_steps: int = 32,
        method: str = "gausslegendre",
        internal_batch_size: int | None = None,
    ) -> None:
        super().__init__(forward_func)
        _positive_int("n_steps", n_steps)
        if internal_batch_size is not None:
            _positive_int("internal_batch_size", internal_batch_size)
        self.n_steps, self.method, self.internal_batch_size = n_steps, method, internal_batch_size
        self.layer = token_embedding(self.similarity) if self.similarity.modality == "text" else None

    def _captum(self, relay: nn.Module | None = None) -> Attribution:
        if relay is not None:
            return LayerIntegratedGradients(self.similarity, relay)
        return IntegratedGradients(self.similarity)

    def _attribute_kwargs(self, inputs: Tensor, ctx: ExplainContext) -> dict[str, Any]:
        return {"n_steps": self.n_steps, "method": self.method, "internal_batch_size": self.internal_batch_size}

    def _maps(self, inputs: Tensor, extra: tuple, columns: Tensor, ctx: ExplainContext) -> Tensor:
        if self.layer is None:
            return super()._maps(inputs, extra, columns, ctx)
        pad = self.similarity.adapter.pad_token_id()
        words = ctx.output_mask.to(inputs.device)  # the tokens that get scores become padding in the baseline
        baseline = torch.where(words, torch.full_like(inputs, 0 if pad is None else pad), inputs)
        with self._relay() as relay:
            lig = self._captum(relay)
            scores = [
                lig.attribute(
                    inputs,
                    baselines=baseline,
                    target=column.tolist(),
                    additional_forward_args=extra or None,
                    **self._attribute_kwargs(inputs, ctx),
                )
                .detach()
                .sum(-1)
                for column in columns
            ]
        return torch.stack(scores, dim=1)  # (N, K, L); the pipeline zeroes start, end and padding

    @property
    def pixel_maps(self) -> bool:  # type: ignore[override]  # per wrapper, where the base has a class constant
        return self.similarity.modality == "image"


class _Perturbation(CaptumAttribution):
    """Base of the methods that perturb patches and read the score's change (Occlusion, FeatureAblation)."""

    score_differences = True

    def __init__(self, forward_func: SimilarityWrapper, *, perturbations_per_eval: int = 1) -> None:
        super().__init__(forward_func)
        _positive_int("perturbations_per_eval", perturbations_per_eval)
        self.perturbations_per_eval = perturbations_per_eval


class CaptumOcclusion(_Perturbation):
    """Captum's ``Occlusion`` with one patch as sliding window and stride, zero baseline (the mean colour),
    pooled to the patch grid: ``(N, 1, h, w)``, each patch's ``|score drop|`` times its pixel count and channels.

    Args:
        forward_func (ImageTextSimilarity): the wrapper to explain.
        perturbations_per_eval (int, optional): Captum's: occluded copies per forward pass. Default: 1.

    Examples::

        >>> from captum_gradeclip.baselines.captum_methods import CaptumOcclusion
        >>> CaptumOcclusion(sim).attribute(pixel_values, target=0).shape
        torch.Size([1, 1, 8, 8])
    """

    method_name = "captum:Occlusion"
    listing_order = 14

    captum_class = Occlusion

    def _attribute_kwargs(self, inputs: Tensor, ctx: ExplainContext) -> dict[str, Any]:
        h, w = ctx.image_grid()
        window = (inputs.shape[1], inputs.shape[2] // h, inputs.shape[3] // w)
        return {
            "sliding_window_shapes": window,
            "strides": window,
            "perturbations_per_eval": self.perturbations_per_eval,
        }


class CaptumFeatureAblation(_Perturbation):
    """Captum's ``FeatureAblation`` with one feature group per patch (all its pixels and channels), zero baseline,
    pooled to the patch grid: ``(N, 1, h, w)``.

    Args:
        forward_func (ImageTextSimilarity): the wrapper to explain.
        perturbations_per_eval (int, optional): Captum's: ablated copies per forward pass. Default: 1.

    Examples::

        >>> from captum_gradeclip.baselines.captum_methods import CaptumFeatureAblation
        >>> CaptumFeatureAblation(sim).attribute(pixel_values, target=0).shape
        torch.Size([1, 1, 8, 8])
    """

    method_name = "captum:FeatureAblation"
    listing_order = 15

    captum_class = FeatureAblation

    def _attribute_kwargs(self, inputs: Tensor, ctx: ExplainContext) -> dict[str, Any]:
        return {
            "feature_mask": patch_feature_mask(inputs.shape, ctx.image_grid()),
            "perturbations_per_eval": self.perturbations_per_eval,
        }


def patch_feature_mask(shape: torch.Size | tuple[int, ...], grid: tuple[int, int]) -> Tensor:
    """A Captum ``feature_mask`` ``(1, C, H, W)`` that gives each patch its own group (row-major, from 0), all
    channels alike; pixels past the last whole patch join the nearest patch of their row or column."""
    _, channels, height, width = shape
    h, w = grid
    rows = (torch.arange(height) // (height // h)).clamp(max=h - 1)
    cols = (torch.arange(width) // (width // w)).clamp(max=w - 1)
    return (rows[:, None] * w + cols[None, :]).expand(1, channels, height, width)


class CaptumSaliency(CaptumAttribution):
    """Captum's ``Saliency`` (the absolute gradient, Captum's default ``abs=True``), pooled to the patch grid.

    Args:
        forward_func (ImageTextSimilarity): the wrapper to explain.

    Examples::

        >>> from captum_gradeclip.baselines.captum_methods import CaptumSaliency
        >>> CaptumSaliency(sim).attribute(pixel_values, target=0).shape
        torch.Size([1, 1, 8, 8])
    """

    method_name = "captum:Saliency"
    listing_order = 10

    captum_class = Saliency
    input_grad = True


class CaptumInputXGradient(CaptumAttribution):
    """Captum's ``InputXGradient`` (the input times the gradient, in the normalised input space), pooled to the
    patch grid.

    Args:
        forward_func (ImageTextSimilarity): the wrapper to explain.

    Examples::

        >>> from captum_gradeclip.baselines.captum_methods import CaptumInputXGradient
        >>> CaptumInputXGradient(sim).attribute(pixel_values, target=0).shape
        torch.Size([1, 1, 8, 8])
    """

    method_name = "captum:InputXGradient"
    listing_order = 11

    captum_class = InputXGradient
    input_grad = True


class CaptumLayerGradCam(CaptumAttribution):
    """Captum's ``LayerGradCam`` on the patch embedding (:func:`patch_embedding`), whose output is the patch grid:
    the channel-weighted sum of the embedding with the mean gradient of each channel as weight, ``(N, 1, h, w)``,
    signed (Captum's default ``relu_attributions=False``). Models without a patch embedding (ResNets) are a
    TypeError saying so. Captum hooks a private relay of the embedding (:func:`relayed`), never the shared model:
    other threads' forwards through the same model are untouched.

    Args:
        forward_func (ImageTextSimilarity): the wrapper to explain.

    Examples::

        >>> from captum_gradeclip.baselines.captum_methods import CaptumLayerGradCam
        >>> CaptumLayerGradCam(sim).attribute(pixel_values, target=0).shape
        torch.Size([1, 1, 8, 8])
    """

    method_name = "captum:LayerGradCam"
    listing_order = 12
    loader_notes = MappingProxyType(
        {
            "vit": "yes, on the patch embedding",
            "resnet": "no: no patch embedding",
            "siglip": "yes, on the patch embedding",
            "pool": "SigLIP yes; a ResNet has no patch embedding (a `TypeError` says so)",
        }
    )

    captum_class = LayerGradCam

    def __init__(self, forward_func: SimilarityWrapper) -> None:
        super().__init__(forward_func)
        self.layer = patch_embedding(self.similarity)

    def _captum(self, relay: nn.Module | None = None) -> Attribution:
        if relay is None:  # pragma: no cover - _relay always gives one: the method has a layer
            raise RuntimeError("captum:LayerGradCam runs at the relay of its layer")
        return LayerGradCam(self.similarity, relay)

    def _to_grid(self, attribution: Tensor, ctx: ExplainContext) -> Tensor:
        if tuple(attribution.shape[-2:]) != tuple(ctx.image_grid()):
            raise TypeError(
                f"captum:LayerGradCam's map {tuple(attribution.shape[-2:])} is not the patch grid {ctx.grid}: the "
                "patch embedding does not output the grid"
            )
        return attribution[:, 0]
