"""The one place that imports Captum's private helpers (tested on captum 0.8 and 0.9)."""

from __future__ import annotations

from captum._utils.common import (
    _format_additional_forward_args,
    _format_output,
    _format_tensor_into_tuples,
    _is_tuple,
)
from captum.attr._utils.visualization import _get_color

__all__ = [
    "_format_additional_forward_args",
    "_format_output",
    "_format_tensor_into_tuples",
    "_get_color",
    "_is_tuple",
]
