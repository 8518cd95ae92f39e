"""Adapter for Hugging Face transformers ``SiglipModel``.

SigLIP pools neither tower at a CLS token:

- **Image**: the ViT has no class token. Its last hidden states, after
  ``post_layernorm``, go into a multi-head attention pooling head (MAP): one
  learned ``probe`` vector is the only query of an ``nn.MultiheadAttention`` over
  all patch tokens, followed by a residual LayerNorm + MLP. The explained block is
  that attention; its pooled query is the probe. So ``w = dS/do`` is taken at the
  probe's attention output (before ``out_proj``), and the loosened attention is
  ``minmax_i cos(q_probe, k_i)`` over all patch tokens (there is no CLS to drop:
  ``image_prefix_tokens = 0``). The head's keys and values are projections of the
  normalised encoder output, as LN1 output is for a CLIP block.
- **Text**: bidirectional (no causal mask) and pooled at the LAST position
  (``last_hidden_state[:, -1]``, then a linear ``head``), whatever token is there:
  the end-of-text token when the text fills the context, a padding token
  otherwise (SigLIP is used with ``padding="max_length"``). There is no start
  token. The pooled query is therefore position ``L - 1``, the keys are every
  position the tower attends to (all of them, or those of ``attention_mask`` when
  one is given), and the reported tokens are those keys without the pooled
  position and without padding and end-of-text ids.

The score keeps SigLIP's sigmoid form in mind: ``score="logit"`` adds the model's
``logit_bias``; the cosine and the softmax over references do not depend on it.
"""

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
    linear_probe,
    text_config_id,
)
from captum_gradeclip.adapters.hf_clip import HFVisionConfigGeometry
from captum_gradeclip.adapters.hf_loader import HFLoader
from captum_gradeclip.adapters.mha import check_supported, in_projections, mha_probe, out_projection
from captum_gradeclip.ops import pooled_attention, projection


class HFSiglipAdapter(
    HFVisionConfigGeometry, Adapter, ImageTower, TextTower, Scorer, ResidualAccess, TokenProjection, HFLoader
):
    """``transformers.SiglipModel`` (ViT with a MAP pooling head, bidirectional text tower pooled at the end)."""

    loader_name = "transformers SiglipModel"
    #: SigLIP pools at the last position and was trained on texts padded to the context: a text's ids, and so
    #: its embedding, must not depend on the longest text beside it.
    text_padding = "max_length"
    image_prefix_tokens = 0
    causal_text = False

    @classmethod
    def matches(cls, model: object) -> bool:
        return type(model).__name__ == "SiglipModel" and type(model).__module__.startswith("transformers.")

    def _head(self) -> Any:
        head = getattr(self.model.vision_model, "head", None)
        if not getattr(self.model.vision_model, "use_head", head is not None) or head is None:
            raise ValueError(
                "a SigLIP vision tower without its attention pooling head (vision_use_head=False) has no pooled query"
            )
        check_supported(head.attention, self.module_name(head.attention))
        return head

    def embed_images(self, pixel_values: Tensor, interpolate_pos_encoding: bool) -> Tensor:
        self._head()
        features = self.model.get_image_features
        return pooled(features(pixel_values=pixel_values, interpolate_pos_encoding=interpolate_pos_encoding))

    def embed_texts(self, input_ids: Tensor, attention_mask: Tensor | None) -> Tensor:
        return pooled(self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask))

    def logit_scale(self) -> Tensor:
        return self.model.logit_scale.exp().reshape(())

    def logit_bias(self) -> Tensor | None:
        return self.model.logit_bias.reshape(())

    def image_blocks(self) -> list[nn.Module]:
        return [self._head().attention]

    def text_blocks(self) -> list[nn.Module]:
        return [layer.self_attn for layer in self.model.text_model.encoder.layers]

    def attention_pool(self, modality: str) -> bool:
        return modality == "image"  # the image tower's explained block is the pooling head's attention

    def probe(self, block: Any, substitute: Substitute) -> contextlib.AbstractContextManager[AttentionRecord]:
        if isinstance(block, nn.MultiheadAttention):
            return mha_probe(block, substitute)
        return linear_probe(
            block, block.q_proj, block.k_proj, block.v_proj, block.out_proj, block.num_heads, substitute
        )

    def pooled_tail(self, block: Any) -> PooledTail | None:
        head = self._head()
        attn = head.attention
        if block is not attn:
            return None
        scale = (attn.embed_dim // attn.num_heads) ** -0.5
        project = out_projection(attn)

        def qkv(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            probe = head.probe.to(x.dtype).expand(x.shape[0], 1, x.shape[-1])
            q, _, _ = in_projections(attn, probe, probe, probe)
            _, k, v = in_projections(attn, x, x, x)
            return q, k, v

        def attend(q_row: Tensor, k: Tensor, v: Tensor) -> Tensor:
            return pooled_attention(q_row, k, v, attn.num_heads, scale)

        def finish(_x: Tensor, o_row: Tensor) -> Tensor:
            y = project(o_row)
            return y + head.mlp(head.layernorm(y))

        return PooledTail(layer=head, num_heads=attn.num_heads, qkv=qkv, attend=attend, finish=finish)

    def out_projection(self, block: Any) -> Callable[[Tensor], Tensor]:
        proj = block.out_proj
        return projection(proj)

    # -- residual-stream access (used by the baselines) ---------------------------------------
    def residual_site(self, block: Any) -> ResidualSite | None:
        head = self._head()
        if block is head.attention:
            return ResidualSite(head)  # input: the normalised patch tokens; output: the pooled (N, C)
        for layer in self.model.text_model.encoder.layers:
            if layer.self_attn is block:
                return ResidualSite(layer)
        return None

    def project_tokens(self, tokens: Tensor, modality: str) -> Tensor:
        if modality == "image":  # tokens out of the head's attention: its residual MLP
            head = self._head()
            return tokens + head.mlp(head.layernorm(tokens))
        text = self.model.text_model
        return text.head(text.final_layer_norm(tokens))

    def pad_token_id(self) -> int | None:
        return text_config_id(self.model, "pad_token_id")

    def eos_index(self, input_ids: Tensor, attention_mask: Tensor | None) -> Tensor:
        return torch.full((input_ids.shape[0],), input_ids.shape[1] - 1, dtype=torch.long, device=input_ids.device)

    def text_context(self, input_ids: Tensor, attention_mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        query = self.eos_index(input_ids, attention_mask)
        keys = torch.ones_like(input_ids, dtype=torch.bool)
        if attention_mask is not None:
            keys = attention_mask.bool()
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        words = keys & (positions[None, :] != query[:, None])
        config = self.model.config.text_config
        for special in (getattr(config, "pad_token_id", None), getattr(config, "eos_token_id", None)):
            if special is not None:
                words = words & (input_ids != special)
        return query, keys, words
