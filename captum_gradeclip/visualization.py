"""The former home of :func:`to_hwc` and :func:`words`, kept so that imports of it still work.

:func:`to_hwc` lives in :mod:`captum_gradeclip.viz` (with the figures and the report), :func:`words` in
:mod:`captum_gradeclip.vocabulary` (with the tokenizer's unknown words); both are ``cg.to_hwc`` and ``cg.words``.
"""

from __future__ import annotations

from captum_gradeclip.viz import to_hwc
from captum_gradeclip.vocabulary import words

__all__ = ["to_hwc", "words"]
