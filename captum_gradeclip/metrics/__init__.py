"""Faithfulness, localisation and robustness metrics for any image or token attribution.

Every metric takes any Captum attribution output: image maps of any resolution
(upsampled with :meth:`captum.attr.LayerAttribution.interpolate`), pixel attributions
``(N, C, H, W)``, and per-token scores ``(N, L)`` or ``(N, L, D)``.

- :func:`image_deletion`, :func:`image_insertion`: curves and AUC, all steps batched.
- :func:`text_deletion`, :func:`text_insertion`: the same over words.
- :func:`pointing_game`, :func:`energy_pointing_game`: masks or boxes.
- :func:`sensitivity`, :func:`infidelity`: Captum's metrics in one line.
"""

from captum_gradeclip.metrics._common import PerturbationCurve
from captum_gradeclip.metrics.deletion import baseline_images, image_deletion, image_insertion
from captum_gradeclip.metrics.pointing import boxes_to_masks, energy_pointing_game, pointing_game
from captum_gradeclip.metrics.robustness import infidelity, sensitivity
from captum_gradeclip.metrics.text_deletion import text_deletion, text_insertion

__all__ = [
    "PerturbationCurve",
    "baseline_images",
    "boxes_to_masks",
    "energy_pointing_game",
    "image_deletion",
    "image_insertion",
    "infidelity",
    "pointing_game",
    "sensitivity",
    "text_deletion",
    "text_insertion",
]
