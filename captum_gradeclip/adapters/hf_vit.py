"""Adapter for Hugging Face transformers ``ViTForImageClassification``: Grad-ECLIP on a plain ViT classifier.

The paper's adaptation to a plain ViT: the score is a class logit (or its
softmax probability) instead of an image-text cosine, and the target selects the
class. Use it through :class:`captum_gradeclip.ImageClassification`. The pooled
token is CLS: the classifier reads ``layernorm(last_hidden_state)[:, 0]``, which
is what :meth:`HFViTClassifierAdapter.embed_images` returns, and
:meth:`HFViTClassifierAdapter.class_logits` applies the classifier.

The attention module is ``ViTAttention`` with ``q_proj``/``k_proj``/``v_proj``/``o_proj``
(transformers 5); the older layout (``attention.query``/``key``/``value`` and
``output.dense``) is also recognised.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from captum_gradeclip.adapters.base import (
    Adapter,
    AttentionRecord,
    Classifier,
    ImageTower,
    PooledTail,
    Substitute,
    block_tail,
    linear_probe,
    pair,
)
from captum_gradeclip.adapters.hf_loader import HFLoader
from captum_gradeclip.ops import projection


def _parts(block: Any) -> tuple[nn.Linear, nn.Linear, nn.Linear, nn.Linear, int]:
    """``(q, k, v, out)`` linears and the number of heads of a ViT attention module, either layout."""
    if hasattr(block, "q_proj"):
        return block.q_proj, block.k_proj, block.v_proj, block.o_proj, int(block.num_attention_heads)
    inner = block.attention
    return inner.query, inner.key, inner.value, block.output.dense, int(inner.num_attention_heads)


def _layers(vit: Any) -> Any:
    """The encoder layers: ``vit.layers`` (transformers 5) or ``vit.encoder.layer`` (4.x)."""
    layers = getattr(vit, "layers", None)
    return layers if layers is not None else vit.encoder.layer


class HFViTClassifierAdapter(Adapter, ImageTower, Classifier, HFLoader):
    """``transformers.ViTForImageClassification``: image only (no text tower), scored by class logits."""

    loader_name = "transformers ViTForImageClassification (with cg.ImageClassification)"

    @classmethod
    def matches(cls, model: object) -> bool:
        return type(model).__name__ == "ViTForImageClassification" and type(model).__module__.startswith(
            "transformers."
        )

    def embed_images(self, pixel_values: Tensor, interpolate_pos_encoding: bool) -> Tensor:
        out = self.model.vit(pixel_values=pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)
        return out.last_hidden_state[:, 0]

    def num_classes(self) -> int:
        return int(self.model.config.num_labels)

    def class_logits(self, features: Tensor) -> Tensor:
        return self.model.classifier(features)

    def image_blocks(self) -> list[nn.Module]:
        return [layer.attention for layer in _layers(self.model.vit)]

    def probe(self, block: Any, substitute: Substitute) -> contextlib.AbstractContextManager[AttentionRecord]:
        q, k, v, out, heads = _parts(block)
        return linear_probe(block, q, k, v, out, heads, substitute)

    def pooled_tail(self, block: Any) -> PooledTail | None:
        vit = self.model.vit
        layer = _layers(vit)[-1]
        if block is not layer.attention or not hasattr(block, "q_proj") or not hasattr(layer, "mlp"):
            return None  # the fast path is written for the transformers 5 layout only
        q_proj, k_proj, v_proj, o_proj, heads = _parts(block)

        def qkv(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            h = layer.layernorm_before(x)
            return q_proj(h), k_proj(h), v_proj(h)

        out = projection(o_proj)
        return block_tail(layer, heads, block.scaling, qkv, out, layer.layernorm_after, layer.mlp, vit.layernorm)

    def out_projection(self, block: Any) -> Callable[[Tensor], Tensor]:
        proj = _parts(block)[3]
        return projection(proj)

    def patch_size(self) -> tuple[int, int]:
        return pair(self.model.config.patch_size)

    def image_size(self) -> tuple[int, int]:
        return pair(self.model.config.image_size)

    def num_channels(self) -> int:
        return int(self.model.config.num_channels)
