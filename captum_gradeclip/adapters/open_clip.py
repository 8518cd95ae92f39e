"""Adapter for open_clip models (``open_clip.CLIP``, ``open_clip.CustomTextCLIP``).

open_clip keeps OpenAI's layout (see :mod:`captum_gradeclip.adapters.openai_clip`),
with these differences, handled here:

- its ``Transformer`` runs batch-first (``batch_first=True``, the default since
  open_clip 2.2x) or sequence-first; the probes follow each block's
  ``nn.MultiheadAttention.batch_first``;
- blocks may have layer scale (``ls_1``, ``ls_2``) and the ViT patch dropout;
- the text tower lives on the model (``CLIP``) or in ``model.text``
  (``CustomTextCLIP`` with a ``TextTransformer``), and pools by its
  ``pool_type``: ``"argmax"`` (CLIP: the end-of-text token has the highest id),
  ``"eos"`` (the first ``eos_id``), ``"last"`` or ``"first"``;
- a logit bias (SigLIP-style open_clip models).

Not supported (a clear ValueError): ViTs with an attentional pooler (CoCa) or
average pooling, the "custom" attention blocks (qk-norm, scaled cosine attention),
text towers with an appended class token (CoCa) or from Hugging Face.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from captum_gradeclip.adapters.base import pair
from captum_gradeclip.adapters.mha import check_supported
from captum_gradeclip.adapters.openai_clip import OpenAICLIPAdapter
from captum_gradeclip.adapters.processing import LoadError, first_line


class OpenCLIPAdapter(OpenAICLIPAdapter):
    """open_clip ``CLIP`` / ``CustomTextCLIP`` with a ViT or ModifiedResNet image tower."""

    loader_name = "open_clip (CLIP or CustomTextCLIP, ViT or ResNet)"
    spec_prefixes = ("open_clip", "openclip")

    def _default_tokenizer(self) -> tuple[object, object]:
        raise ValueError(
            "open_clip texts need the model's tokenizer: pass open_clip.get_tokenizer(ARCH) as `tokenizer`"
        )

    @classmethod
    def load_spec(cls, name: str, spec: str, *, allow_missing_weights: bool = False) -> tuple[nn.Module, object]:
        """``open_clip:ARCH[:PRETRAINED]``: ``open_clip.create_model_and_transforms`` and its eval preprocess.

        Returns:
            *(nn.Module, (preprocess, tokenizer))*: the model, its eval transform and ``get_tokenizer(ARCH)``.
        """
        from captum_gradeclip.adapters.hf_loader import HUB_HINT, hub_reachable

        try:
            import open_clip
        except ImportError:
            raise LoadError(f"{spec}: open_clip is not installed; pip install 'captum-gradeclip[openclip]'") from None
        arch, _, pretrained = name.partition(":")
        if arch not in open_clip.list_models():
            raise LoadError(f"{spec}: unknown open_clip architecture {arch!r} (see open_clip.list_models())")
        if pretrained and not Path(pretrained).is_file() and not hub_reachable():
            raise LoadError(f"{spec}: the model hub is unreachable, so the {pretrained!r} weights cannot be "
                            f"downloaded; {HUB_HINT} (open_clip:ARCH:/path/to/weights)")  # fmt: skip
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=pretrained or None)
            tokenizer = open_clip.get_tokenizer(arch)
        except (OSError, RuntimeError, ValueError) as error:
            raise LoadError(f"{spec}: cannot load ({first_line(error)}); {HUB_HINT}") from None
        if not hasattr(tokenizer, "decoder") or not hasattr(tokenizer, "encode"):
            raise LoadError(f"{spec}: its tokenizer ({type(tokenizer).__name__}) is not a CLIP BPE tokenizer")
        return model.eval(), (preprocess, tokenizer)

    @classmethod
    def matches(cls, model: object) -> bool:
        return type(model).__module__.startswith("open_clip.") and type(model).__name__ in ("CLIP", "CustomTextCLIP")

    @classmethod
    def convert(cls, model: nn.Module, dtype: torch.dtype) -> nn.Module:
        """Cast whole (OpenAI clip's ``convert_weights`` is for OpenAI clip only)."""
        return model.to(dtype)

    def _check_image_tower(self) -> None:
        v = self.visual
        name = type(v).__name__
        if name not in ("VisionTransformer", "ModifiedResNet"):
            raise ValueError(f"open_clip image tower {name} is not supported (VisionTransformer or ModifiedResNet)")
        if name == "VisionTransformer":
            pool = getattr(v, "pool_type", "avg" if getattr(v, "global_average_pool", False) else "tok")
            if getattr(v, "attn_pool", None) is not None or pool != "tok":
                raise ValueError(
                    "open_clip ViTs pooled by an attentional pooler or by averaging are not supported "
                    "(Grad-ECLIP needs the class token as the pooled query)"
                )
            for block in v.transformer.resblocks:
                self._check_block(block)
        super()._check_image_tower()

    def _run_image_transformer(self, x: Tensor) -> Tensor:
        return self.visual.transformer(x)  # open_clip's Transformer takes and returns batch-first tokens

    def _text_tower(self) -> Any:
        """The module that holds the text tower's parts (the model itself, or ``model.text``)."""
        tower = getattr(self.model, "text", None)
        if tower is None:
            return self.model
        if type(tower).__name__ != "TextTransformer":
            raise ValueError(f"open_clip text tower {type(tower).__name__} is not supported (TextTransformer)")
        if getattr(tower, "cls_emb", None) is not None:
            raise ValueError("open_clip text towers with an appended class token (CoCa) are not supported")
        return tower

    def _text_transformer(self) -> Any:
        transformer = self._text_tower().transformer
        for block in transformer.resblocks:
            self._check_block(block)
            check_supported(block.attn, self.module_name(block.attn))
        return transformer

    def _check_block(self, block: Any) -> None:
        """A ValueError naming the block's attention when it is not an ``nn.MultiheadAttention``."""
        attn = getattr(block, "attn", None)
        if not isinstance(attn, nn.MultiheadAttention):
            where = f"`{self.module_name(attn)}` ({type(attn).__name__})" if attn is not None else "missing"
            raise ValueError(
                f"open_clip {type(block).__name__} `{self.module_name(block)}` is not supported: its attention "
                f"{where} is not the nn.MultiheadAttention that Grad-ECLIP needs (block_type='default')"
            )

    def _pool_type(self) -> str:
        tower = self._text_tower()
        return tower.pool_type if tower is not self.model else self.model.text_pool_type

    def _eos_id(self) -> int | None:
        tower = self._text_tower()
        eos = tower.eos_id if tower is not self.model else getattr(self.model, "text_eos_id", None)
        return None if eos is None else int(eos)

    def text_eos_id(self) -> int | None:
        return self._eos_id() if self._pool_type() == "eos" else None

    def _causal(self) -> bool:
        return self._text_tower().attn_mask is not None

    @property
    def causal_text(self) -> bool:  # type: ignore[override]  # per model, where the role has a class constant
        return self._causal()

    def pad_token_id(self) -> int | None:
        tower = self._text_tower()  # a CLIP keeps no pad_id: open_clip's tokenizers pad with zeros
        return int(getattr(tower, "pad_id", 0)) if tower is not self.model else 0

    def _native_grid(self) -> tuple[int, int]:
        return pair(self.visual.grid_size)

    def _patch_dropout(self, x: Tensor) -> Tensor:
        return self.visual.patch_dropout(x)

    def logit_bias(self) -> Tensor | None:
        bias = getattr(self.model, "logit_bias", None)
        return None if bias is None else bias.reshape(())

    def image_size(self) -> tuple[int, int]:
        return pair(self.visual.image_size)

    def eos_index(self, input_ids: Tensor, attention_mask: Tensor | None) -> Tensor:
        pool = self._pool_type()
        n, length = input_ids.shape
        if pool == "argmax":
            return input_ids.argmax(dim=-1)
        if pool == "eos":
            eos = self._eos_id()
            if eos is None:
                raise ValueError("open_clip text pool_type 'eos' needs the model's end-of-text id, and it names none")
            return (input_ids == eos).int().argmax(dim=-1)
        if pool == "last":
            return torch.full((n,), length - 1, dtype=torch.long, device=input_ids.device)
        if pool == "first":
            return torch.zeros(n, dtype=torch.long, device=input_ids.device)
        raise ValueError(f"open_clip text pool_type {pool!r} is not supported (argmax, eos, last or first)")

    def text_context(self, input_ids: Tensor, attention_mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        if self._causal():
            return super().text_context(input_ids, attention_mask)
        # Bidirectional tower: every position is a key, except padding when the tower masks it (the
        # tower takes no attention mask). Reported: the keys without the pooled position and without
        # padding, known from the tower's pad_id (TextTransformer) or from `attention_mask`.
        tower = self._text_tower()
        query = self.eos_index(input_ids, attention_mask)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        keys = torch.ones_like(input_ids, dtype=torch.bool)
        if getattr(tower, "use_pad_mask", False):
            keys = input_ids != tower.pad_id
        words = keys & (positions[None, :] != query[:, None])
        pad = getattr(tower, "pad_id", None)
        if pad is not None:
            words = words & (input_ids != pad)
        if attention_mask is not None:
            words = words & attention_mask.bool()
        return query, keys, words
