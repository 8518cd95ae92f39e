"""``torch.nn.MultiheadAttention``, as used by OpenAI ``clip``, open_clip and SigLIP's pooling head.

``nn.MultiheadAttention`` computes its in-projections, attention and out-projection
inside one fused call, so there is no submodule to hook for q, k, v or the
attention output ``o``. The probe here therefore recomputes the block from its own
parameters (``in_proj_weight``/``in_proj_bias``, or the separate
``q/k/v_proj_weight``, and ``out_proj``) on the inputs the module received, in a
forward hook, and returns that recomputation as the module's output. The
recomputation is the same function, so the model's output is unchanged; ``o`` is
then an ordinary tensor of the forward pass, so ``dS/do`` comes from autograd
(it equals ``W_o^T dS/dy`` for the module output ``y``) and ``substitute`` can
replace it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captum_gradeclip.adapters.base import AttentionRecord, Substitute, thread_owned
from captum_gradeclip.ops import attend, projection

#: Positional parameters of ``nn.MultiheadAttention.forward``, in order.
_MHA_ARGS = (
    "query",
    "key",
    "value",
    "key_padding_mask",
    "need_weights",
    "attn_mask",
    "average_attn_weights",
    "is_causal",
)


def check_supported(mha: nn.MultiheadAttention, name: str | None = None) -> None:
    """Raises a TypeError for a module that is not ``nn.MultiheadAttention`` (naming it as ``name`` when given),
    and a ValueError for ``nn.MultiheadAttention`` options that CLIP-family models never use."""
    if not isinstance(mha, nn.MultiheadAttention):
        where = f"`{name}` ({type(mha).__name__})" if name else type(mha).__name__
        raise TypeError(f"expected an nn.MultiheadAttention block; got {where}")
    if mha.bias_k is not None or mha.bias_v is not None or mha.add_zero_attn:
        raise ValueError("nn.MultiheadAttention with bias_k/bias_v or add_zero_attn is not supported")


def in_projections(
    mha: nn.MultiheadAttention, query: Tensor, key: Tensor, value: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """``(q, k, v)`` of batch-first inputs, heads merged, from the module's own in-projection parameters."""
    if mha._qkv_same_embed_dim:
        wq, wk, wv = mha.in_proj_weight.chunk(3)
    else:
        wq, wk, wv = mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight
    bq = bk = bv = None
    if mha.in_proj_bias is not None:
        bq, bk, bv = mha.in_proj_bias.chunk(3)
    return F.linear(query, wq, bq), F.linear(key, wk, bk), F.linear(value, wv, bv)


def out_projection(mha: nn.MultiheadAttention) -> Callable[[Tensor], Tensor]:
    """``o -> W_o o + b_o``, without calling (and hooking) ``mha.out_proj``."""
    return projection(mha.out_proj)


def additive_mask(
    attn_mask: Tensor | None,
    key_padding_mask: Tensor | None,
    is_causal: bool,
    n: int,
    heads: int,
    tq: int,
    tk: int,
    dtype: torch.dtype,
    device: torch.device,
) -> Tensor | None:
    """The attention masks of ``nn.MultiheadAttention`` as one additive ``(N, H, Tq, Tk)`` (or broadcastable) mask.

    Boolean masks mark the positions that may NOT be attended (``True`` = masked), as
    in PyTorch; float masks are added to the logits.
    """

    def as_additive(mask: Tensor) -> Tensor:
        if mask.dtype == torch.bool:
            return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))
        return mask.to(dtype)

    total = None
    if attn_mask is None and is_causal:
        attn_mask = torch.ones(tq, tk, dtype=torch.bool, device=device).triu(1)
    if attn_mask is not None:
        mask = as_additive(attn_mask)
        if mask.dim() == 3:  # (N * H, Tq, Tk)
            mask = mask.reshape(n, heads, tq, tk)
        total = mask
    if key_padding_mask is not None:
        pad = as_additive(key_padding_mask)[:, None, None, :]
        total = pad if total is None else total + pad
    return total


@contextlib.contextmanager
def mha_probe(block: nn.MultiheadAttention, substitute: Substitute) -> Iterator[AttentionRecord]:
    """A probe for ``nn.MultiheadAttention`` (see the module docstring): batch-first or sequence-first.

    The record's q, k and v are the in-projections of the module's query, key and
    value inputs (for a self-attention block, the block's LN1 output), batch-first;
    ``o`` is the attention output before the out-projection.
    """
    check_supported(block)
    record = AttentionRecord(num_heads=block.num_heads, block=block)

    def recompute(module: nn.MultiheadAttention, args: tuple, kwargs: dict, output: tuple) -> tuple:
        params = dict(zip(_MHA_ARGS, args, strict=False))
        params.update(kwargs)
        query, key, value = params["query"], params["key"], params["value"]
        if query.dim() != 3:
            raise ValueError(f"nn.MultiheadAttention probe needs batched 3-D inputs; got {tuple(query.shape)}")
        if not module.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        q, k, v = in_projections(module, query, key, value)
        n, tq, _ = q.shape
        mask = additive_mask(
            params.get("attn_mask"),
            params.get("key_padding_mask"),
            bool(params.get("is_causal", False)),
            n,
            module.num_heads,
            tq,
            k.shape[1],
            q.dtype,
            q.device,
        )
        record.q, record.k, record.v = q, k, v
        record.o = substitute(record, attend(q, k, v, module.num_heads, mask))
        y = out_projection(module)(record.o)
        if not module.batch_first:
            y = y.transpose(0, 1)
        return (y, *output[1:])

    handle = block.register_forward_hook(thread_owned(recompute), with_kwargs=True)
    try:
        yield record
    finally:
        handle.remove()
