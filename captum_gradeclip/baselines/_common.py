"""What every baseline shares: the wrapper check, Captum-style formatting, attention probabilities."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from captum.attr import Attribution
from captum.log import log_usage
from torch import Tensor, nn

from captum_gradeclip._compat import _format_output
from captum_gradeclip.adapters import Adapter, AttentionRecord
from captum_gradeclip.attr._base import _block_index, _half_precision_hint, _shape_output, preserved_model
from captum_gradeclip.attr._contract import (
    TargetType,
    check_blocks,
    check_layer_input,
    format_inputs,
    resolve_wrapper,
    run_device,
    target_columns,
)
from captum_gradeclip.wrappers import ExplainContext, _Similarity, deferred_checks


class WrapperAttribution(Attribution, ABC):
    """Base class of the baselines: one similarity wrapper in, GradECLIP-shaped maps out.

    A subclass implements :meth:`_maps`. This class checks the arguments, keeps the
    model unchanged (parameters frozen during the call, flags restored after, even on
    an exception), mirrors the tuple-ness of ``inputs`` and returns ``(N, 1, h, w)`` /
    ``(N, M, h, w)`` maps for images and ``(N, L)`` / ``(N, M, L)`` token scores for text.

    Methods that take gradients (GAME, Grad-CAM, M2IB) are also Captum
    :class:`~captum.attr.GradientAttribution` s. Every ``attribute`` carries
    ``captum.log.log_usage``, so Captum's ``NoiseTunnel`` wraps any of them.

    Args:
        forward_func (ImageTextSimilarity or TextImageSimilarity): the wrapper to
            explain, its bound ``forward``, or the wrapper inside ``nn.DataParallel``.
    """

    #: Wrapper modalities the method supports.
    modalities: ClassVar[tuple[str, ...]] = ("image", "text")
    #: ``True`` when :meth:`_maps` returns pixel maps ``(N, K, H, W)`` instead of token maps ``(N, K, T)``.
    pixel_maps: ClassVar[bool] = False

    def __init__(self, forward_func: _Similarity) -> None:
        wrapper = resolve_wrapper(forward_func)
        if wrapper.modality not in self.modalities:
            raise TypeError(
                f"{self.get_name()} explains {' and '.join(self.modalities)} wrappers only; "
                f"got a {wrapper.modality} wrapper ({type(wrapper).__name__})"
            )
        self._wrapper = wrapper
        super().__init__(forward_func)

    @property
    def similarity(self) -> _Similarity:
        """The similarity wrapper that is explained (``forward_func`` itself, or the module behind it)."""
        return self._wrapper

    @classmethod
    def get_name(cls) -> str:
        return cls.__name__

    @log_usage()
    def attribute(  # type: ignore[override]
        self,
        inputs: Tensor | tuple[Tensor, ...],
        target: TargetType = None,
        additional_forward_args: Any = None,
        attribute_to_layer_input: bool = False,
    ) -> Tensor | tuple[Tensor, ...]:
        r"""Explains the wrapper's scores for ``inputs``.

        Args:
            inputs (Tensor or tuple[Tensor]): ``pixel_values (N, C, H, W)`` for an
                image wrapper, ``input_ids (N, L)`` for a text wrapper.
            target (int, tuple, list, Tensor or None, optional): the output column to
                explain, in Captum's forms: an int or a 1-tuple ``(column,)`` for every
                example; a list of ints or 1-tuples, one per example; a tensor with one
                element (broadcast) or one per example. ``None`` (this package's
                extension) explains every column.
            additional_forward_args (optional): for text, ``(attention_mask,)``.
            attribute_to_layer_input (bool, optional): Captum's layer switch; only
                ``False`` applies (the methods are defined inside attention blocks).

        Returns:
            *Tensor* (or a 1-tuple, mirroring ``inputs``) on the input's device:
            ``(N, 1, h, w)`` maps for images with a target, ``(N, M, h, w)`` with
            ``target=None``; ``(N, L)`` token scores for text with a target,
            ``(N, M, L)`` with ``target=None`` (SOS, EOS and padding score 0).
        """
        check_layer_input(attribute_to_layer_input, self.get_name())
        sim = self.similarity
        is_tuple, x, extra = format_inputs(sim, inputs, additional_forward_args)
        device, home = run_device(self.forward_func, sim, x), x.device
        x = x.to(device)
        extra = tuple(a.to(device) if isinstance(a, Tensor) else a for a in extra)
        columns = target_columns(target, x.shape[0], sim.num_references).to(x.device)
        with deferred_checks(), preserved_model(sim), _half_precision_hint(x, sim):
            sim(x[:1], *(a[:1] if isinstance(a, Tensor) else a for a in extra))  # checks the inputs early
            ctx = sim.explain_context((x,), extra)
            maps = self._maps(x, extra, columns, ctx).detach()
        out = maps if self.pixel_maps else _shape_output(maps, ctx)
        if ctx.grid is None and target is not None:
            out = out[:, 0]
        return _format_output(is_tuple, (out.to(home),))

    @abstractmethod
    def _maps(self, inputs: Tensor, extra: tuple, columns: Tensor, ctx: ExplainContext) -> Tensor:
        """Maps ``(N, K, T)`` over tokens (or ``(N, K, H, W)`` with :attr:`pixel_maps`) for ``(K, N)`` columns."""


def pick_blocks(
    sim: _Similarity, layer: nn.Module | None, layers: int | None, default: int | None, method: str
) -> list[nn.Module]:
    """The ``layers`` consecutive attention blocks ending at ``layer`` (default: all blocks, or ``default``),
    each checked to be an attention block the adapter can read (a clear TypeError naming it otherwise)."""
    blocks = sim.explained_blocks()
    last = len(blocks) - 1 if layer is None else _block_index(sim, blocks, layer)
    if layers is None:
        layers = last + 1 if default is None else min(default, last + 1)
    if isinstance(layers, bool) or not isinstance(layers, int) or not 1 <= layers <= last + 1:
        raise ValueError(
            f"`layers` must be an int in [1, {last + 1}] (the blocks up to the explained layer); got {layers!r}"
        )
    picked = blocks[last - layers + 1 : last + 1]
    check_blocks(sim, picked, method)
    return picked


def allowed_keys(sim: _Similarity, inputs: Tensor, extra: tuple) -> Tensor | None:
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


def split_heads(x: Tensor, heads: int) -> Tensor:
    """``(N, T, C) -> (N, H, T, C / H)``."""
    n, t, c = x.shape
    return x.reshape(n, t, heads, c // heads).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """``(N, H, T, D) -> (N, T, H * D)``."""
    n, h, t, d = x.shape
    return x.transpose(1, 2).reshape(n, t, h * d)


def attention_probs(q: Tensor, k: Tensor, heads: int, allowed: Tensor | None) -> Tensor:
    r"""Per-head :math:`\mathrm{softmax}(q k^\top d^{-1/2} + \text{mask})`, ``(N, H, T, T)``.

    Args:
        q, k (Tensor): ``(N, T, C)`` in-projections, heads merged.
        heads (int): number of heads.
        allowed (Tensor, optional): ``(N, T, T)`` boolean key mask (see :func:`allowed_keys`).
    """
    qh, kh = split_heads(q, heads), split_heads(k, heads)
    logits = (qh @ kh.transpose(-1, -2)) * qh.shape[-1] ** -0.5
    if allowed is not None:
        logits = logits.masked_fill(~allowed[:, None], float("-inf"))
    return torch.softmax(logits, dim=-1)


def record_probs(record: AttentionRecord, allowed: Tensor | None) -> Tensor:
    """Attention probabilities of a probed block from its recorded q and k."""
    return attention_probs(record.q, record.k, record.num_heads, allowed)  # type: ignore[arg-type]


def query_rows(matrix: Tensor, ctx: ExplainContext) -> Tensor:
    """The pooled token's row ``(N, T)`` of a per-example ``(N, T, T)`` matrix (or the only row of ``(N, 1, T)``)."""
    if matrix.shape[-2] == 1:  # an attention pool (ResNet, SigLIP's head): its query is the pooled token
        return matrix[:, 0]
    rows = torch.arange(matrix.shape[0], device=matrix.device)
    return matrix[rows, ctx.query_index.to(matrix.device)]


def require_self_attention(record: AttentionRecord, method: str) -> None:
    """A TypeError for a pooling block (one query over the tokens), which has no token-to-token attention."""
    if is_pool(record):
        raise TypeError(
            f"{method} needs token-to-token self-attention blocks; {type(record.block).__name__} is an attention "
            f"pool ({record.q.shape[1]} query over {record.k.shape[1]} tokens). Use GradECLIP, RawAttention, Grad-CAM, "
            "MaskCLIP, CLIP Surgery, M2IB or RISE"
        )


def gather_columns(per_reference: Tensor, columns: Tensor) -> Tensor:
    """``(N, T, M)`` maps for every reference to ``(N, K, T)`` maps for ``(K, N)`` columns."""
    index = columns.T[:, None, :].expand(-1, per_reference.shape[1], -1)  # (N, T, K)
    return per_reference.gather(2, index.to(per_reference.device)).transpose(1, 2)


def capability(sim: _Similarity, name: str, method: str, blocks: tuple[nn.Module, ...] = ()) -> Any:
    """The adapter method ``name`` that ``method`` needs (``probe_layer`` at every one of ``blocks``, or
    ``project_tokens``), or a clear TypeError naming the loader."""
    adapter = sim.adapter
    base = "residual_site" if name == "probe_layer" else name
    missing = getattr(type(adapter), base) is getattr(Adapter, base)
    if not missing and name == "probe_layer":
        missing = any(adapter.residual_site(block) is None for block in blocks)
    if missing:
        raise TypeError(
            f"{method} needs the adapter capability `{name}`, which the {adapter.loader_name} adapter lacks"
        )
    return getattr(adapter, name)


def is_pool(record: AttentionRecord) -> bool:
    """Whether a probed block is an attention pool: one query row over all the tokens (ResNet, SigLIP's head)."""
    return record.q is not None and record.k is not None and record.q.shape[1] == 1 != record.k.shape[1]


def keep(_record: AttentionRecord, o: Tensor) -> Tensor:
    """A probe substitute that changes nothing."""
    return o
