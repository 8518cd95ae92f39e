"""What several baselines share: attention probabilities, key masks, capability checks.

The pipeline (wrapper check, Captum-style formatting, model preservation, output shaping) is
:class:`captum_gradeclip.attr.SimilarityAttribution`, shared with Grad-ECLIP."""

from __future__ import annotations

import torch
from torch import Tensor

from captum_gradeclip.adapters import AttentionRecord
from captum_gradeclip.ops import attention_probs
from captum_gradeclip.wrappers import ExplainContext, SimilarityWrapper


def allowed_keys(sim: SimilarityWrapper, inputs: Tensor, extra: tuple) -> Tensor | None:
    """``(N, T, T)`` which key each query may attend to: ``None`` (all) for images; for text, the
    attention mask's tokens, and only earlier ones when the adapter's ``causal_text`` (default True) says so."""
    if sim.modality == "image":
        return None
    n, length = inputs.shape
    keys = torch.ones(length, length, dtype=torch.bool, device=inputs.device)
    if sim.adapter.causal_text:
        keys = keys.tril()
    mask = extra[0] if extra and isinstance(extra[0], Tensor) else None
    if mask is None:
        return keys.expand(n, length, length)
    return keys[None] & mask.bool()[:, None, :]


def record_probs(record: AttentionRecord, allowed: Tensor | None) -> Tensor:
    """Attention probabilities of a probed block from its recorded q and k."""
    return attention_probs(record.tensor("q"), record.tensor("k"), record.num_heads, allowed)


def query_rows(matrix: Tensor, ctx: ExplainContext) -> Tensor:
    """The pooled token's row ``(N, T)`` of a per-example ``(N, T, T)`` matrix (or the only row of ``(N, 1, T)``)."""
    if matrix.shape[-2] == 1:  # an attention pool (ResNet, SigLIP's head): its query is the pooled token
        return matrix[:, 0]
    rows = torch.arange(matrix.shape[0], device=matrix.device)
    return matrix[rows, ctx.query_index.to(matrix.device)]


def gather_columns(per_reference: Tensor, columns: Tensor) -> Tensor:
    """``(N, T, M)`` maps for every reference to ``(N, K, T)`` maps for ``(K, N)`` columns."""
    index = columns.T[:, None, :].expand(-1, per_reference.shape[1], -1)  # (N, T, K)
    return per_reference.gather(2, index.to(per_reference.device)).transpose(1, 2)


def keep(_record: AttentionRecord, o: Tensor) -> Tensor:
    """A probe substitute that changes nothing."""
    return o
