"""Adapter for Hugging Face transformers ``CLIPModel``."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from captum_gradeclip.adapters._hf import pooled
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
    linear_probe,
    pair,
    text_config_id,
)
from captum_gradeclip.adapters.hf_loader import HFLoader
from captum_gradeclip.ops import projection


class HFVisionConfigGeometry:
    """Patch size, input size and channels read from a transformers model's ``config.vision_config``."""

    model: Any  # the loader's model, as Adapter holds it

    def patch_size(self) -> tuple[int, int]:
        return pair(self.model.config.vision_config.patch_size)

    def image_size(self) -> tuple[int, int]:
        return pair(self.model.config.vision_config.image_size)

    def num_channels(self) -> int:
        return int(self.model.config.vision_config.num_channels)


class HFCLIPAdapter(
    HFVisionConfigGeometry, Adapter, ImageTower, TextTower, Scorer, ResidualAccess, TokenProjection, HFLoader
):
    """``transformers.CLIPModel`` (ViT image tower, causal text tower)."""

    loader_name = "transformers CLIPModel"

    @classmethod
    def matches(cls, model: object) -> bool:
        return type(model).__name__ == "CLIPModel" and type(model).__module__.startswith("transformers.")

    def embed_images(self, pixel_values: Tensor, interpolate_pos_encoding: bool) -> Tensor:
        features = self.model.get_image_features
        return pooled(features(pixel_values=pixel_values, interpolate_pos_encoding=interpolate_pos_encoding))

    def embed_texts(self, input_ids: Tensor, attention_mask: Tensor | None) -> Tensor:
        return pooled(self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask))

    def logit_scale(self) -> Tensor:
        return self.model.logit_scale.exp()

    def _tower(self, modality: str) -> Any:
        return self.model.vision_model if modality == "image" else self.model.text_model

    def image_blocks(self) -> list[nn.Module]:
        return [layer.self_attn for layer in self.model.vision_model.encoder.layers]

    def text_blocks(self) -> list[nn.Module]:
        return [layer.self_attn for layer in self.model.text_model.encoder.layers]

    def probe(self, block: Any, substitute: Substitute) -> contextlib.AbstractContextManager[AttentionRecord]:
        return linear_probe(
            block, block.q_proj, block.k_proj, block.v_proj, block.out_proj, block.num_heads, substitute
        )

    def pooled_tail(self, block: Any) -> PooledTail | None:
        vision = self.model.vision_model
        layer = vision.encoder.layers[-1]
        if block is not layer.self_attn:
            return None

        def qkv(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            h = layer.layer_norm1(x)
            return block.q_proj(h), block.k_proj(h), block.v_proj(h)

        def head(y: Tensor) -> Tensor:
            return self.model.visual_projection(vision.post_layernorm(y))

        out = projection(block.out_proj)
        return block_tail(layer, block.num_heads, block.scale, qkv, out, layer.layer_norm2, layer.mlp, head)

    # -- residual-stream access (used by the baselines) ---------------------------------------
    def residual_site(self, block: Any) -> ResidualSite | None:
        for modality in ("image", "text"):
            for layer in self._tower(modality).encoder.layers:
                if layer.self_attn is block:
                    return ResidualSite(layer)
        return None

    def project_tokens(self, tokens: Tensor, modality: str) -> Tensor:
        if modality == "image":
            return self.model.visual_projection(self.model.vision_model.post_layernorm(tokens))
        return self.model.text_projection(self.model.text_model.final_layer_norm(tokens))

    def pad_token_id(self) -> int | None:
        return text_config_id(self.model, "pad_token_id")

    def out_projection(self, block: Any) -> Callable[[Tensor], Tensor]:
        proj = block.out_proj
        return projection(proj)  # not proj(o): that would fire the probe

    def text_eos_id(self) -> int | None:
        eos_token_id = self.model.text_model.eos_token_id
        return None if eos_token_id == 2 else int(eos_token_id)  # legacy configs pool at the highest id

    def eos_index(self, input_ids: Tensor, attention_mask: Tensor | None) -> Tensor:
        # The same rule as CLIPTextTransformer: legacy configs (eos_token_id == 2)
        # pool at the highest id, newer ones at the first eos_token_id.
        eos_token_id = self.model.text_model.eos_token_id
        if eos_token_id == 2:
            return input_ids.to(torch.int).argmax(dim=-1)
        return (input_ids.to(torch.int) == eos_token_id).int().argmax(dim=-1)
