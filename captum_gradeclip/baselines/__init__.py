"""Baseline explanations of CLIP similarity, all on the same wrappers and with :class:`GradECLIP`'s shapes.

Each method is a Captum :class:`~captum.attr.Attribution` whose ``attribute(inputs, target,
additional_forward_args)`` returns ``(N, 1, h, w)`` (``(N, M, h, w)`` with ``target=None``)
for an :class:`ImageTextSimilarity` and ``(N, L)`` token scores for a
:class:`TextImageSimilarity` (RISE returns maps at the input's resolution).

- :class:`RawAttention` (image, text): the pooled token's attention row, one forward.
- :class:`AttentionRollout` (image, text): rolled-out attention, one forward.
- :class:`GAME` (image, text): gradients w.r.t. the attention probabilities.
- :class:`TokenGradCAM` (image, text): gradients w.r.t. the last block's input tokens.
- :class:`MaskCLIP` (image): the value path, one forward.
- :class:`CLIPSurgery` (image): the v-v path and feature surgery, one forward.
- :class:`RISE` (image): ``n_masks`` masked forwards, batched.
- :class:`M2IB` (image, text): ``steps`` forward-backward passes per target.
- Captum's own methods (:mod:`~captum_gradeclip.baselines.captum_methods`), pooled to the patch grid:
  :class:`CaptumIntegratedGradients` (image, text), :class:`CaptumOcclusion`, :class:`CaptumFeatureAblation`,
  :class:`CaptumSaliency`, :class:`CaptumInputXGradient`, :class:`CaptumLayerGradCam` (image).

A baseline is one module of this package whose class declares its ``method_name``: the registry
(:mod:`captum_gradeclip.methods`) lists it, and this package exports it, with no other edit.
"""

import importlib
import pkgutil

from captum_gradeclip.baselines.captum_methods import (
    CaptumFeatureAblation,
    CaptumInputXGradient,
    CaptumIntegratedGradients,
    CaptumLayerGradCam,
    CaptumOcclusion,
    CaptumSaliency,
)
from captum_gradeclip.baselines.clip_surgery import CLIPSurgery
from captum_gradeclip.baselines.game import GAME
from captum_gradeclip.baselines.grad_cam import TokenGradCAM
from captum_gradeclip.baselines.m2ib import M2IB
from captum_gradeclip.baselines.maskclip import MaskCLIP
from captum_gradeclip.baselines.raw_attention import RawAttention
from captum_gradeclip.baselines.rise import RISE
from captum_gradeclip.baselines.rollout import AttentionRollout

__all__ = [
    "GAME",
    "M2IB",
    "RISE",
    "AttentionRollout",
    "CLIPSurgery",
    "CaptumFeatureAblation",
    "CaptumInputXGradient",
    "CaptumIntegratedGradients",
    "CaptumLayerGradCam",
    "CaptumOcclusion",
    "CaptumSaliency",
    "MaskCLIP",
    "RawAttention",
    "TokenGradCAM",
]


def _discover() -> list[str]:
    """The public method classes of this package's other modules (imported here), put in its namespace."""
    names = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda info: info.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for name, obj in vars(module).items():
            if isinstance(obj, type) and obj.__module__ == module.__name__ and "method_name" in vars(obj):
                if name not in __all__ and not name.startswith("_"):
                    globals()[name] = obj
                    names.append(name)
    return names


__all__ += _discover()
