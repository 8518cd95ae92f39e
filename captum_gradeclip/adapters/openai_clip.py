"""Adapter for the OpenAI ``clip`` package (``clip.model.CLIP``): ViT and ModifiedResNet image towers.

The OpenAI layout is shared by open_clip (see :mod:`captum_gradeclip.adapters.open_clip`,
which subclasses this adapter): ``model.visual`` is a ``VisionTransformer`` (conv
patch embedding, CLS token, ``transformer.resblocks`` of ``nn.MultiheadAttention``
blocks, ``ln_post`` and ``proj``) or a ``ModifiedResNet`` whose last stage is an
``AttentionPool2d``; the text tower is ``token_embedding``, ``transformer``,
``ln_final`` and ``text_projection``, pooled at the end-of-text token.

The model is recognised by its class's module (``clip.model``), so the ``clip``
package is never imported here.

Two things are computed by the adapter rather than by the model's own forward,
both as the same function:

- the ViT image embedding, so that the position embedding can be interpolated to
  any grid (the OpenAI and open_clip forwards only accept the native size);
- the ResNet attention pool (``F.multi_head_attention_forward`` has nothing to
  hook), for the same reason and to expose its q, k, v and ``o``. The trunk up to
  the pool is the model's own forward.

The ``clip`` tests check both against the model's ``encode_image`` at the native size.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
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
    capture_input,
    interpolate_positions,
    pair,
)
from captum_gradeclip.adapters.mha import check_supported, in_projections, mha_probe, out_projection
from captum_gradeclip.adapters.processing import (
    BPEProcessing,
    HFProcessing,
    LoadError,
    Processing,
    ProcessingRole,
    first_line,
    hf_like,
)
from captum_gradeclip.ops import pooled_attention, projection

#: Total stride of ``ModifiedResNet``: a stride-2 stem conv, a 2x2 average pool and three stride-2 stages.
RESNET_STRIDE = 32


class OpenAICLIPAdapter(Adapter, ImageTower, TextTower, Scorer, ResidualAccess, TokenProjection, ProcessingRole):
    """OpenAI ``clip`` models: ``clip.model.CLIP`` with a ViT or ModifiedResNet image tower."""

    loader_name = "OpenAI clip (clip.model.CLIP, ViT or ResNet)"
    spec_prefixes: tuple[str, ...] = ("openai",)

    # -- processing -----------------------------------------------------------------------------
    def processing(self, processor: Any, tokenizer: Any = None) -> Processing:
        """``clip.load``'s preprocess and ``clip.tokenize`` (every text padded to the 77-token context).

        A processor called like a transformers one (the ResNet ShapesCLIP's) is used as such.
        """
        context = self.text_context_length()
        if hf_like(processor) or hf_like(tokenizer):  # causal towers: padding never reaches the pooled token
            return HFProcessing(processor, "longest", context, tokenizer)
        if tokenizer is None:
            tokenizer, bpe = self._default_tokenizer()
        else:
            bpe = tokenizer if hasattr(tokenizer, "decoder") else None
        return BPEProcessing(processor, tokenizer, bpe, context)

    def _default_tokenizer(self) -> tuple[Any, Any]:
        from clip import tokenize
        from clip.clip import _tokenizer

        return tokenize, _tokenizer

    @classmethod
    def load_spec(cls, name: str, spec: str, *, allow_missing_weights: bool = False) -> tuple[nn.Module, object]:
        """``openai:NAME``: ``clip.load(NAME)`` (a name of ``clip.available_models()`` or a ``.pt`` path)."""
        from captum_gradeclip.adapters.hf_loader import HUB_HINT, hub_reachable

        try:
            import clip
        except ImportError as error:
            raise LoadError(f"{spec}: OpenAI clip cannot be imported ({first_line(error)}); "
                            "pip install 'captum-gradeclip[openai]'") from None  # fmt: skip
        if not Path(name).is_file() and name not in clip.available_models():
            raise LoadError(f"{spec}: unknown OpenAI CLIP model {name!r}; one of {clip.available_models()} or a path")
        try:  # a cached download loads offline
            model, preprocess = clip.load(name, device="cpu", jit=False)
        except (OSError, RuntimeError) as error:
            if not Path(name).is_file() and not hub_reachable("openaipublic.azureedge.net"):
                raise LoadError(f"{spec}: the OpenAI download server is unreachable and {name!r} is not cached; "
                                f"{HUB_HINT} (openai:/path/to/model.pt)") from None  # fmt: skip
            raise LoadError(f"{spec}: cannot load ({first_line(error)}); {HUB_HINT}") from None
        return model.float().eval(), preprocess

    low_precision_advice = "OpenAI clip keeps its LayerNorms in float32: clip.model.convert_weights(model) for float16"

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self._pool_probes: dict[int, tuple[AttentionRecord, Substitute]] = {}
        #: Not part of the model: the point where the attention pool's input is captured (fast path).
        self._pool_input = nn.Identity()

    @classmethod
    def matches(cls, model: object) -> bool:
        return type(model).__module__ == "clip.model" and type(model).__name__ == "CLIP"

    # -- the towers (open_clip overrides where its layout differs) --------------------------
    @property
    def visual(self) -> Any:
        return self.model.visual

    def _is_resnet(self) -> bool:
        return hasattr(self.visual, "attnpool")

    def _check_image_tower(self) -> None:
        """Raises a ValueError for image towers this adapter cannot explain."""
        if self._is_resnet():
            if self.visual.attnpool is None:
                raise ValueError("a ModifiedResNet without an attention pool cannot be explained by Grad-ECLIP")
            return
        for block in self.visual.transformer.resblocks:
            check_supported(block.attn, self.module_name(block.attn))

    def _run_image_transformer(self, x: Tensor) -> Tensor:
        """Runs ``visual.transformer`` on batch-first tokens; returns batch-first tokens."""
        return self.visual.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)  # OpenAI blocks are sequence-first

    def _text_tower(self) -> Any:
        """The module that holds ``transformer``, ``ln_final`` and ``text_projection``."""
        return self.model

    def _text_transformer(self) -> Any:
        return self.model.transformer

    def _native_grid(self) -> tuple[int, int]:
        """The patch grid that the ViT position embedding was made for."""
        side = round((self.visual.positional_embedding.shape[0] - 1) ** 0.5)
        return side, side

    def _patch_dropout(self, x: Tensor) -> Tensor:
        return x

    # -- embeddings ------------------------------------------------------------------------
    def embed_images(self, pixel_values: Tensor, interpolate_pos_encoding: bool) -> Tensor:
        self._check_image_tower()
        if self._is_resnet():
            features = capture_input(self.visual.attnpool, lambda: self.visual(pixel_values))
            return self._attention_pool(self._pool_input(features))
        x = self._vit_tokens(pixel_values)
        x = self._run_image_transformer(x)
        return self._vit_head(x[:, 0])

    def _vit_tokens(self, pixel_values: Tensor) -> Tensor:
        """Patch tokens with CLS and (interpolated) position embeddings, after ``ln_pre``: ``(N, T, C)``."""
        v = self.visual
        x = v.conv1(pixel_values.to(v.conv1.weight.dtype))
        n, c, gh, gw = x.shape
        x = x.reshape(n, c, gh * gw).permute(0, 2, 1)
        cls = v.class_embedding.to(x.dtype).reshape(1, 1, c).expand(n, 1, c)
        x = torch.cat([cls, x], dim=1)
        x = x + interpolate_positions(v.positional_embedding, 1, self._native_grid(), (gh, gw)).to(x.dtype)
        return v.ln_pre(self._patch_dropout(x))

    def _vit_head(self, pooled: Tensor) -> Tensor:
        """``ln_post`` and the projection of the CLS token ``(N, C) -> (N, E)``."""
        v = self.visual
        y = v.ln_post(pooled)
        return y @ v.proj if v.proj is not None else y

    def _pool_tokens(self, features: Tensor) -> Tensor:
        """Attention-pool tokens ``(N, 1 + h*w, C)``: the mean token, then the spatial features, plus positions."""
        pool = self.visual.attnpool
        n, c, h, w = features.shape
        x = features.reshape(n, c, h * w).permute(0, 2, 1)
        x = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1)
        side = round((pool.positional_embedding.shape[0] - 1) ** 0.5)
        return x + interpolate_positions(pool.positional_embedding, 1, (side, side), (h, w)).to(x.dtype)

    def _pool_qkv(self, features: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``q (N, 1, C)`` of the mean token, ``k, v (N, 1 + h*w, C)`` of all pool tokens."""
        pool = self.visual.attnpool
        x = self._pool_tokens(features)
        q = F.linear(x[:, :1], pool.q_proj.weight, pool.q_proj.bias)
        return q, F.linear(x, pool.k_proj.weight, pool.k_proj.bias), F.linear(x, pool.v_proj.weight, pool.v_proj.bias)

    def _pool_scale(self) -> float:
        pool = self.visual.attnpool
        return (pool.q_proj.out_features // pool.num_heads) ** -0.5

    def _attention_pool(self, features: Tensor) -> Tensor:
        """``AttentionPool2d`` as the model computes it, with the probe (if any) filled in."""
        pool = self.visual.attnpool
        q, k, v = self._pool_qkv(features)
        o = pooled_attention(q[:, 0], k, v, pool.num_heads, self._pool_scale())[:, None]
        probe = self._pool_probes.get(id(pool))
        if probe is not None:
            record, substitute = probe
            record.q, record.k, record.v = q, k, v
            record.o = o = substitute(record, o)
        return F.linear(o[:, 0], pool.c_proj.weight, pool.c_proj.bias)

    def embed_texts(self, input_ids: Tensor, attention_mask: Tensor | None) -> Tensor:
        # The OpenAI-format text tower is causal and pools at the end-of-text token, so
        # padding after it never matters; the tower takes no attention mask.
        return self.model.encode_text(input_ids)

    def logit_scale(self) -> Tensor:
        return self.model.logit_scale.exp().reshape(())

    # -- structure ---------------------------------------------------------------------------
    @classmethod
    def convert(cls, model: nn.Module, dtype: torch.dtype) -> nn.Module:
        """OpenAI ``clip`` keeps its LayerNorms in float32 and converts the rest with ``clip.model.convert_weights``
        (float16 only).

        Raises:
            ValueError: for a dtype other than float16 or float32.
        """
        if dtype is torch.float32:
            return model.to(dtype)
        if dtype is not torch.float16:
            raise ValueError("OpenAI clip converts to float16 only")
        from clip.model import convert_weights

        convert_weights(model)
        return model

    def image_blocks(self) -> list[nn.Module]:
        self._check_image_tower()
        if self._is_resnet():
            return [self.visual.attnpool]
        return [block.attn for block in self.visual.transformer.resblocks]

    def attention_pool(self, modality: str) -> bool:
        return modality == "image" and self._is_resnet()

    def text_blocks(self) -> list[nn.Module]:
        blocks = [block.attn for block in self._text_transformer().resblocks]
        for block in blocks:
            check_supported(block, self.module_name(block))
        return blocks

    def probe(self, block: Any, substitute: Substitute) -> contextlib.AbstractContextManager[AttentionRecord]:
        if self._is_resnet() and block is self.visual.attnpool:
            return self._pool_probe(block, substitute)
        return mha_probe(block, substitute)

    @contextlib.contextmanager
    def _pool_probe(self, pool: Any, substitute: Substitute) -> Iterator[AttentionRecord]:
        record = AttentionRecord(num_heads=pool.num_heads, block=pool)
        self._pool_probes[id(pool)] = (record, substitute)
        try:
            yield record
        finally:
            del self._pool_probes[id(pool)]

    def pooled_tail(self, block: Any) -> PooledTail | None:
        if self._is_resnet():
            return self._pool_tail(block)
        layer = self.visual.transformer.resblocks[-1]
        if block is not layer.attn:
            return None
        attn = layer.attn
        batch_first = attn.batch_first
        scale = (attn.embed_dim // attn.num_heads) ** -0.5
        layer_scale = (getattr(layer, "ls_1", nn.Identity()), getattr(layer, "ls_2", nn.Identity()))

        def qkv(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            h = layer.ln_1(x if batch_first else x.transpose(0, 1))
            return in_projections(attn, h, h, h)

        return block_tail(
            layer,
            attn.num_heads,
            scale,
            qkv,
            out_projection(attn),
            layer.ln_2,
            layer.mlp,
            self._vit_head,
            layer_scale=layer_scale,
            seq_first=not batch_first,
        )

    def _pool_tail(self, block: Any) -> PooledTail | None:
        pool = self.visual.attnpool
        if block is not pool:
            return None
        scale = self._pool_scale()

        def attend(q_row: Tensor, k: Tensor, v: Tensor) -> Tensor:
            return pooled_attention(q_row, k, v, pool.num_heads, scale)

        def finish(_x: Tensor, o_row: Tensor) -> Tensor:
            return F.linear(o_row, pool.c_proj.weight, pool.c_proj.bias)

        return PooledTail(
            layer=self._pool_input, num_heads=pool.num_heads, qkv=self._pool_qkv, attend=attend, finish=finish
        )

    def out_projection(self, block: Any) -> Callable[[Tensor], Tensor]:
        if isinstance(block, nn.MultiheadAttention):
            return out_projection(block)
        proj = block.c_proj  # the ResNet attention pool
        return projection(proj)

    # -- residual-stream access (used by the baselines) ---------------------------------------
    def residual_site(self, block: Any) -> ResidualSite | None:
        if self._is_resnet() and block is self.visual.attnpool:
            return ResidualSite(self._pool_input, "feature_map")
        towers = [self._text_transformer()]
        if not self._is_resnet():
            towers.append(self.visual.transformer)
        for transformer in towers:
            for layer in transformer.resblocks:
                if layer.attn is block:
                    return ResidualSite(layer, "batch_first" if block.batch_first else "seq_first")
        return None

    def project_tokens(self, tokens: Tensor, modality: str) -> Tensor:
        if modality == "image":
            return tokens if self._is_resnet() else self._vit_head(tokens)  # after the pool: embeddings already
        tower = self._text_tower()
        y = tower.ln_final(tokens)
        projection = tower.text_projection
        if projection is None:
            return y
        return projection(y) if isinstance(projection, nn.Module) else y @ projection

    def pad_token_id(self) -> int | None:
        return 0  # the OpenAI tokenizer pads with zeros

    # -- geometry ---------------------------------------------------------------------------
    def patch_size(self) -> tuple[int, int]:
        if self._is_resnet():
            return RESNET_STRIDE, RESNET_STRIDE
        return pair(self.visual.conv1.kernel_size)

    def image_size(self) -> tuple[int, int]:
        return pair(self.visual.input_resolution)

    def num_channels(self) -> int:
        return int(self.visual.conv1.in_channels)

    def eos_index(self, input_ids: Tensor, attention_mask: Tensor | None) -> Tensor:
        return input_ids.argmax(dim=-1)  # the end-of-text token has the highest id
