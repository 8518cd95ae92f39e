"""Attribution methods."""

from captum_gradeclip.attr._base import AttentionAttribution
from captum_gradeclip.attr.grad_eclip import GradECLIP

__all__ = ["AttentionAttribution", "GradECLIP"]
