r"""Attention maths, written once for every adapter and method.

Tensors are batch-first: ``(N, T, C)`` with heads merged, ``(N, H, T, D)`` split (``C = H * D``).

- :func:`split_heads`, :func:`merge_heads`: the two layouts.
- :func:`attention_probs`: per-head :math:`\mathrm{softmax}(q k^\top d^{-1/2} + \text{mask})`.
- :func:`attend`: multi-head attention with an additive mask (what a probed block recomputes).
- :func:`pooled_attention`: one query row (the pooled token) over all keys, fused.
- :func:`single_head_attention`: one head over all channels (Grad-ECLIP's paper mode).
- :func:`projection`: a linear layer applied by its weights, without calling (and hooking) the module.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def split_heads(x: Tensor, heads: int) -> Tensor:
    """``(N, T, C) -> (N, H, T, C / H)``."""
    n, t, c = x.shape
    return x.reshape(n, t, heads, c // heads).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """``(N, H, T, D) -> (N, T, H * D)``."""
    n, h, t, d = x.shape
    return x.transpose(1, 2).reshape(n, t, h * d)


def attention_probs(q: Tensor, k: Tensor, heads: int, allowed: Tensor | None = None) -> Tensor:
    r"""Per-head :math:`\mathrm{softmax}(q k^\top d^{-1/2} + \text{mask})`, ``(N, H, Tq, Tk)``.

    Args:
        q, k (Tensor): ``(N, Tq, C)`` and ``(N, Tk, C)`` in-projections, heads merged.
        heads (int): number of heads.
        allowed (Tensor, optional): ``(N, Tq, Tk)`` boolean key mask; ``False`` keys get probability 0.
    """
    qh, kh = split_heads(q, heads), split_heads(k, heads)
    logits = (qh @ kh.transpose(-1, -2)) * qh.shape[-1] ** -0.5
    if allowed is not None:
        logits = logits.masked_fill(~allowed[:, None], float("-inf"))
    return torch.softmax(logits, dim=-1)


def attend(q: Tensor, k: Tensor, v: Tensor, heads: int, mask: Tensor | None = None) -> Tensor:
    r"""Multi-head attention :math:`\mathrm{softmax}(q k^\top / \sqrt{d} + m)\, v`, heads merged.

    Args:
        q (Tensor): ``(N, Tq, C)`` queries.
        k, v (Tensor): ``(N, Tk, C)`` keys and values.
        heads (int): number of heads; ``d = C / heads``.
        mask (Tensor, optional): additive mask broadcastable to ``(N, heads, Tq, Tk)``.

    Returns:
        *Tensor* ``(N, Tq, C)``.
    """
    qh, kh, vh = split_heads(q, heads), split_heads(k, heads), split_heads(v, heads)
    logits = (qh @ kh.transpose(-1, -2)) * (q.shape[-1] // heads) ** -0.5
    if mask is not None:
        logits = logits + mask
    return merge_heads(torch.softmax(logits, dim=-1) @ vh)


def pooled_attention(q_row: Tensor, k: Tensor, v: Tensor, heads: int, scale: float) -> Tensor:
    r"""One query row of multi-head attention, :math:`\mathrm{softmax}(q k^\top s)\, v` per head, heads merged.

    Args:
        q_row (Tensor): ``(N, C)`` query.
        k, v (Tensor): ``(N, T, C)`` keys and values.
        heads (int): number of heads.
        scale (float): logit scale ``s`` (``head_dim ** -0.5`` in CLIP).

    Returns:
        *Tensor* ``(N, C)``.
    """
    n, t, c = k.shape
    qh = q_row.reshape(n, heads, 1, c // heads)
    kh = k.reshape(n, t, heads, c // heads).transpose(1, 2)
    vh = v.reshape(n, t, heads, c // heads).transpose(1, 2)
    # one fused op instead of five: fewer launches where the host issuing ops is the bottleneck (GPUs)
    return F.scaled_dot_product_attention(qh, kh, vh, scale=scale).reshape(n, c)


def single_head_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    r"""One head over all C channels: :math:`\mathrm{softmax}(q k^\top / \sqrt{C})\, v`."""
    scale = q.shape[-1] ** -0.5
    return torch.softmax(q @ k.transpose(-1, -2) * scale, dim=-1) @ v


def projection(linear: nn.Linear) -> Callable[[Tensor], Tensor]:
    """``x -> W x + b`` with ``linear``'s weight and bias, without calling the module (so that a probe's hook on
    it does not fire)."""
    return lambda x: F.linear(x, linear.weight, linear.bias)


class _QueriesAndKeys(Protocol):
    q: Tensor | None
    k: Tensor | None


def is_pool(record: _QueriesAndKeys) -> bool:
    """Whether a probed block (its :class:`~captum_gradeclip.adapters.AttentionRecord`) is an attention pool: one
    query row over all the tokens (ResNet, SigLIP's head)."""
    return record.q is not None and record.k is not None and record.q.shape[1] == 1 != record.k.shape[1]
