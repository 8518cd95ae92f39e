"""Adapter for Hugging Face transformers ``BlipForImageTextRetrieval``: the image-text contrastive (ITC) path.

The score is the cosine of ``vision_proj(image_embeds[:, 0])`` and
``text_proj(text_encoder(...)[:, 0])``, as ``forward(..., use_itm_head=False)``
computes it; the image-text matching head (ITM), which cross-attends, is not
explained.

- **Image**: a pre-norm ViT like CLIP's; its attention has one fused ``qkv``
  linear (split into q, k, v of C channels each) and a ``projection``. The pooled
  token is CLS; the embedding is taken from the last hidden state after
  ``post_layernorm``.
- **Text**: a BERT encoder (post-norm: q, k and v are projections of the layer
  input itself), bidirectional, pooled at position 0 (``[CLS]``). The keys are the
  positions that ``attention_mask`` keeps; the reported tokens are those without
  position 0, ``[SEP]`` and padding.

The retrieval model has no learned logit scale; ``score="logit"`` uses
``exp(config.logit_scale_init_value)``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from captum_gradeclip.adapters.base import (
    Adapter,
    AttentionRecord,
    ImageTower,
    PooledTail,
    ResidualAccess,
    ResidualSite,
    Scorer,
    Substitute,
    TextTower,
    TokenProjection,
    block_tail,
    hook_handles_removed,
    linear_probe,
    text_config_id,
    thread_owned,
)
from captum_gradeclip.adapters.hf_clip import HFVisionConfigGeometry
from captum_gradeclip.adapters.hf_loader import HFLoader
from captum_gradeclip.ops import projection


@contextlib.contextmanager
def fused_qkv_probe(
    block: nn.Module, qkv: nn.Module, out_proj: nn.Module, num_heads: int, substitute: Substitute
) -> Iterator[AttentionRecord]:
    """A probe for attention with one fused ``qkv`` linear (output ``[q | k | v]``) and an out-projection."""
    record = AttentionRecord(num_heads=num_heads, block=block)

    def on_qkv(_module: nn.Module, _args: tuple, output: Tensor) -> None:
        record.q, record.k, record.v = output.chunk(3, dim=-1)

    def on_o(_module: nn.Module, args: tuple) -> tuple:
        record.o = substitute(record, args[0])
        return (record.o, *args[1:])

    handles = [
        qkv.register_forward_hook(thread_owned(on_qkv)),
        out_proj.register_forward_pre_hook(thread_owned(on_o)),
    ]
    with hook_handles_removed(handles):
        yield record


class HFBlipRetrievalAdapter(
    HFVisionConfigGeometry, Adapter, ImageTower, TextTower, Scorer, ResidualAccess, TokenProjection, HFLoader
):
    """``transformers.BlipForImageTextRetrieval``, ITC cosine path (ViT image tower, BERT text tower)."""

    loader_name = "transformers BlipForImageTextRetrieval (ITC)"
    causal_text = False

    @classmethod
    def matches(cls, model: object) -> bool:
        return type(model).__name__ == "BlipForImageTextRetrieval" and type(model).__module__.startswith(
            "transformers."
        )

    def embed_images(self, pixel_values: Tensor, interpolate_pos_encoding: bool) -> Tensor:
        out = self.model.vision_model(pixel_values=pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)
        return self.model.vision_proj(out.last_hidden_state[:, 0])

    def embed_texts(self, input_ids: Tensor, attention_mask: Tensor | None) -> Tensor:
        out = self.model.text_encoder(input_ids=input_ids, attention_mask=attention_mask)
        return self.model.text_proj(out.last_hidden_state[:, 0])

    def logit_scale(self) -> Tensor:
        value = math.exp(float(self.model.config.logit_scale_init_value))
        return torch.tensor(value, device=self.model.vision_proj.weight.device)

    def image_blocks(self) -> list[nn.Module]:
        return [layer.self_attn for layer in self.model.vision_model.encoder.layers]

    def text_blocks(self) -> list[nn.Module]:
        return [layer.attention for layer in self.model.text_encoder.encoder.layer]

    def _is_image_block(self, block: Any) -> bool:
        return hasattr(block, "qkv")

    def probe(self, block: Any, substitute: Substitute) -> contextlib.AbstractContextManager[AttentionRecord]:
        if self._is_image_block(block):
            return fused_qkv_probe(block, block.qkv, block.projection, block.num_heads, substitute)
        attn = block.self
        return linear_probe(
            block, attn.query, attn.key, attn.value, block.output.dense, attn.num_attention_heads, substitute
        )

    def pooled_tail(self, block: Any) -> PooledTail | None:
        vision = self.model.vision_model
        layer = vision.encoder.layers[-1]
        if block is not layer.self_attn:
            return None

        def qkv(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            q, k, v = block.qkv(layer.layer_norm1(x)).chunk(3, dim=-1)
            return q, k, v

        def head(y: Tensor) -> Tensor:
            return self.model.vision_proj(vision.post_layernorm(y))

        out = projection(block.projection)
        return block_tail(layer, block.num_heads, block.scale, qkv, out, layer.layer_norm2, layer.mlp, head)

    def out_projection(self, block: Any) -> Callable[[Tensor], Tensor]:
        proj = block.projection if self._is_image_block(block) else block.output.dense
        return projection(proj)

    def num_channels(self) -> int:
        return int(self.model.vision_model.embeddings.patch_embedding.in_channels)

    # -- residual-stream access (used by the baselines) ---------------------------------------
    def residual_site(self, block: Any) -> ResidualSite | None:
        for layer in self.model.vision_model.encoder.layers:
            if layer.self_attn is block:
                return ResidualSite(layer)
        for layer in self.model.text_encoder.encoder.layer:
            if layer.attention is block:
                return ResidualSite(layer)
        return None

    def project_tokens(self, tokens: Tensor, modality: str) -> Tensor:
        if modality == "image":
            return self.model.vision_proj(self.model.vision_model.post_layernorm(tokens))
        return self.model.text_proj(tokens)  # BERT layers end in their own LayerNorm

    def pad_token_id(self) -> int | None:
        return text_config_id(self.model, "pad_token_id")

    def eos_index(self, input_ids: Tensor, attention_mask: Tensor | None) -> Tensor:
        return torch.zeros(input_ids.shape[0], dtype=torch.long, device=input_ids.device)  # [CLS]

    def text_context(self, input_ids: Tensor, attention_mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        query = self.eos_index(input_ids, attention_mask)
        keys = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        words = keys & (positions[None, :] > 0)
        config = self.model.config.text_config
        for special in (getattr(config, "sep_token_id", None), getattr(config, "pad_token_id", None)):
            if special is not None:
                words = words & (input_ids != special)
        return query, keys, words
