"""What the transformers loaders (:mod:`.hf_clip`, :mod:`.hf_siglip`) share."""

from __future__ import annotations

from typing import Any

from torch import Tensor


def pooled(output: Any) -> Tensor:
    """The pooled embedding of a ``get_*_features`` call: transformers 5 returns a ``BaseModelOutputWithPooling``,
    4.x a tensor."""
    if isinstance(output, Tensor):
        return output
    return output.pooler_output
