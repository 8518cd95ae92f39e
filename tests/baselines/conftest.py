"""Oracles for the baselines, written from the model's own eager outputs."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from captum_gradeclip import methods as registry
from captum_gradeclip.attr import AttentionAttribution
from tests.conftest import EOS

#: Every registered baseline (every method but the attention-gradient ones), with its small test arguments.
METHODS = [(m.cls, dict(m.quick)) for m in registry.available() if not issubclass(m.cls, AttentionAttribution)]
IDS = [m.__name__ for m, _ in METHODS]


def vision_outputs(model, x):
    return model.vision_model(
        pixel_values=x, output_attentions=True, output_hidden_states=True, interpolate_pos_encoding=True
    )


def image_scores(model, out, text_embeds):
    emb = model.visual_projection(out.pooler_output)
    return F.normalize(emb, dim=-1) @ F.normalize(text_embeds, dim=-1).T


def text_outputs(model, ids, mask):
    return model.text_model(input_ids=ids, attention_mask=mask, output_attentions=True, output_hidden_states=True)


def text_scores(model, out, image_embeds):
    emb = model.text_projection(out.pooler_output)
    return F.normalize(emb, dim=-1) @ F.normalize(image_embeds, dim=-1).T


def grid(values, x, patch=8):
    """``(N, P)`` patch values to ``(N, 1, h, w)``."""
    return values.reshape(len(x), 1, x.shape[-2] // patch, x.shape[-1] // patch).detach()


def eos_positions(ids):
    return (ids == EOS).int().argmax(-1)


def word_mask(ids, mask):
    pos = torch.arange(ids.shape[1])[None]
    eos = eos_positions(ids)[:, None]
    return (pos > 0) & (pos < eos) & mask.bool()
