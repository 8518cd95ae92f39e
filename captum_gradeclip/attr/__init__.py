"""Attribution methods and the one base they share."""

from captum_gradeclip.attr.base import AttentionAttribution, SimilarityAttribution
from captum_gradeclip.attr.grad_eclip import GradECLIP

__all__ = ["AttentionAttribution", "GradECLIP", "SimilarityAttribution"]
