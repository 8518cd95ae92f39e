"""The one pipeline of every explanation of a similarity wrapper, written once.

:class:`SimilarityAttribution` is the public base of Grad-ECLIP and of every baseline:
it resolves the wrapper (Captum's ``forward_func`` forms), picks and checks the
explained blocks, formats the inputs and targets Captum-style, keeps the model
unchanged (parameter flags and train/eval modes restored, also after an exception),
turns low-precision failures into advice, checks the result is finite, and shapes the
output (``(N, K, h, w)`` maps or ``(N, K, L)`` token scores, one column per target,
mirroring the tuple-ness of ``inputs``). A method supplies one small hook:

- a baseline implements :meth:`SimilarityAttribution._maps` (token maps for the
  requested columns);
- an attention-gradient method subclasses :class:`AttentionAttribution`, which runs
  the forward pass with the graph starting at the first explained ``o`` (or the
  adapter's pooled tail), takes one gradient per target column, and asks the method
  for :meth:`AttentionAttribution._layer_map` (one block's map from q/k/v and
  ``w = dS/do``) and :meth:`AttentionAttribution._combine` (the blocks merged).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import threading
import warnings
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any, ClassVar

import torch
from captum.attr import Attribution, GradientAttribution, LayerAttribution
from captum.log import log_usage
from torch import Tensor, nn

from captum_gradeclip._compat import _format_output
from captum_gradeclip.adapters import AttentionRecord, PooledTail, Substitute, capture_input, is_own_hook
from captum_gradeclip.attr.contract import (
    TargetType,
    check_blocks,
    check_layer_input,
    check_options,
    format_inputs,
    module_name,
    resolve_wrapper,
    run_device,
    target_columns,
)
from captum_gradeclip.ops import is_pool
from captum_gradeclip.wrappers import ExplainContext, SimilarityWrapper, deferred_checks, require


class _ModelGuard:
    """The global state of one model that explanations share across threads, under one lock.

    Parameters' ``requires_grad`` and modules' train/eval modes are attributes of the model, seen by every
    thread: they cannot be made per thread. The first explanation that builds a graph switches the
    parameters off; the last one to end switches them back (a count, under :attr:`lock`); train/eval modes
    seen at the first entry are put back when the last explanation of the model ends.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active = 0  # explanations running on the model
        self.graphs = 0  # of which build an autograd graph (the parameters are switched off)
        self.frozen: list[nn.Parameter] = []
        self.modes: dict[nn.Module, bool] = {}


_GUARDS: weakref.WeakKeyDictionary[nn.Module, _ModelGuard] = weakref.WeakKeyDictionary()
_GUARDS_LOCK = threading.Lock()


def model_guard(model: nn.Module) -> _ModelGuard:
    """The one :class:`_ModelGuard` of ``model`` (created on first use; forgotten with the model)."""
    with _GUARDS_LOCK:
        guard = _GUARDS.get(model)
        if guard is None:
            guard = _GUARDS[model] = _ModelGuard()
        return guard


@contextlib.contextmanager
def preserved_model(model: nn.Module, graph: bool = True) -> Iterator[None]:
    """Runs the body and restores the model's parameter flags and train/eval modes, also after an exception.

    Safe with several threads explaining the same model at once: the flags and modes are the model's, shared
    by all threads, so they are changed and restored under the model's one lock (:func:`model_guard`, keyed by
    the wrapped model, so that every wrapper of one model shares it): the parameters stay switched off while
    any explanation that builds a graph runs, and are switched back by the last one to end; the modes seen
    when the first explanation began are put back when the last one ends.

    Args:
        model (nn.Module): the model (or wrapper) to keep as it is.
        graph (bool, optional): ``True`` runs the body with gradients on for activations only: the
            parameters are switched to ``requires_grad=False`` so that no graph is built for them.
            ``False`` runs it under ``torch.no_grad()`` and leaves the parameters alone, for bodies that
            differentiate with ``torch.func`` transforms only (which do not see an outer ``no_grad``):
            on a large model, switching every parameter costs the host more than the rest of a fast
            explanation. Default: True.
    """
    guard = model_guard(getattr(model, "model", model))
    with guard.lock:
        guard.active += 1
        for m in model.modules():
            guard.modes.setdefault(m, m.training)
        if graph:
            if guard.graphs == 0:
                guard.frozen = [p for p in model.parameters() if p.requires_grad]
                for p in guard.frozen:
                    p.requires_grad_(False)
            guard.graphs += 1
    try:
        with torch.enable_grad() if graph else torch.no_grad():
            yield
    finally:
        with guard.lock:
            guard.active -= 1
            if graph:
                guard.graphs -= 1
                if guard.graphs == 0:
                    for p in guard.frozen:
                        p.requires_grad_(True)
                    guard.frozen = []
            if guard.active == 0:
                for m, flag in guard.modes.items():
                    if m.training is not flag:  # a module's __setattr__ is slow: only what changed
                        m.training = flag
                guard.modes = {}


def _inference_tensors_message(sim: nn.Module, detail: str = "") -> str:
    return (
        "the explanation needs autograd, and it leaves torch.inference_mode() for its own work, but the model or "
        "the wrapper holds tensors made under inference_mode (its parameters, or the wrapper's reference "
        "embeddings), which autograd cannot use: load the model and build the wrapper outside "
        "torch.inference_mode() (torch.no_grad() is enough there)" + detail
    )


def _vjp(func: Callable[..., Any], *primals: Any) -> tuple[Any, Callable[..., Any]]:
    """``torch.func.vjp`` without auxiliary outputs: ``(output, vjp_fn)`` (its annotation admits the ``has_aux``
    triple too)."""
    output, vjp_fn = torch.func.vjp(func, *primals)[:2]
    return output, vjp_fn


@contextlib.contextmanager
def _inference_mode_left(sim: nn.Module, x: Tensor, extra: tuple) -> Iterator[tuple[Tensor, tuple]]:
    """Runs the body outside ``torch.inference_mode`` (thread-local) with the inputs as normal tensors (clones of
    inference tensors, which autograd cannot record), so that every method works under it.

    A model or wrapper whose own tensors were made under ``inference_mode`` cannot be explained by the methods
    that differentiate: every method then raises the same RuntimeError, naming ``inference_mode`` and what to
    do, before any work.
    """
    # the wrapper's references, and one parameter (a model loaded under inference_mode has them all so): cheap
    own = itertools.chain(sim.buffers(recurse=False), itertools.islice(sim.parameters(), 1))
    if any(t.is_inference() for t in own):
        raise RuntimeError(_inference_tensors_message(sim))

    def normal(t: Any) -> Any:
        return t.clone() if isinstance(t, Tensor) and t.is_inference() else t

    with torch.inference_mode(False):
        try:
            yield normal(x), tuple(normal(a) for a in extra)
        except RuntimeError as error:
            if "Inference tensors" not in str(error):
                raise
            raise RuntimeError(_inference_tensors_message(sim, f". Original error: {error}")) from error


@contextlib.contextmanager
def _half_precision_hint(x: Tensor, model: nn.Module) -> Iterator[None]:
    """Turns 'op not implemented for Half/BFloat16' into an error that says what to do."""
    try:
        yield
    except RuntimeError as error:
        param = next(model.parameters(), None)
        dtypes = {x.dtype, param.dtype if param is not None else x.dtype}
        low = dtypes & {torch.float16, torch.bfloat16}
        if low and "not implemented for" in str(error):
            raise RuntimeError(
                f"an operation does not support {sorted(map(str, low))} on {x.device.type}: "
                f"use float32 there (model.float() and float32 inputs). Original error: {error}"
            ) from error
        if low and "mixed dtype" in str(error):
            advice = getattr(getattr(model, "adapter", None), "low_precision_advice", "")
            raise RuntimeError(
                f"the model mixes {sorted(map(str, low))} and float32 in one operation on {x.device.type}. "
                f"Convert it the loader's own way{f' ({advice})' if advice else ''}, or use float32 "
                f"(model.float() and float32 inputs). Original error: {error}"
            ) from error
        raise


def _as_leaf(_record: AttentionRecord, o: Tensor) -> Tensor:
    """The first explained ``o`` becomes the leaf where the graph starts."""
    return o if o.requires_grad else o.detach().requires_grad_()


class SimilarityAttribution(Attribution, ABC):
    """Base class of every explanation of a similarity wrapper: Grad-ECLIP and the baselines.

    A subclass implements :meth:`_maps` (or, for attention-gradient methods, derives from
    :class:`AttentionAttribution`). This class checks the arguments, keeps the model
    unchanged (parameters frozen during the call, flags and modes restored after, even on
    an exception), mirrors the tuple-ness of ``inputs`` and returns ``(N, 1, h, w)`` /
    ``(N, M, h, w)`` maps for images and ``(N, L)`` / ``(N, M, L)`` token scores for text.
    Every ``attribute`` carries ``captum.log.log_usage``, so Captum's ``NoiseTunnel`` wraps
    any method.

    Args:
        forward_func (ImageTextSimilarity or TextImageSimilarity): the wrapper to
            explain, its bound ``forward``, or the wrapper inside ``nn.DataParallel``.

    Examples::

        >>> class Uniform(cg.SimilarityAttribution):  # the smallest method: every token scores 1
        ...     def _maps(self, inputs, extra, columns, ctx):
        ...         return torch.ones(len(inputs), len(columns), ctx.key_mask.shape[1])
        >>> Uniform(sim).attribute(pixel_values, target=0).shape  # (N, 1, h, w) on ShapesCLIP's 8 x 8 patches
        torch.Size([1, 1, 8, 8])
    """

    #: Wrapper modalities the method supports.
    modalities: ClassVar[tuple[str, ...]] = ("image", "text")
    #: ``True`` when :meth:`_maps` returns pixel maps ``(N, K, H, W)`` instead of token maps ``(N, K, T)``.
    pixel_maps: ClassVar[bool] = False

    # -- the method's identity, declared once on its class and read by :mod:`captum_gradeclip.methods` --------
    #: The display name (:meth:`get_name`, the registry's and the tables' name). A class of a module of
    #: ``attr/`` or ``baselines/`` that declares it is listed by the registry; ``None``: not a listed method.
    method_name: ClassVar[str | None] = None
    #: The listed variants, display name -> the constructor arguments the variant fixes. Default (empty):
    #: one variant, :attr:`method_name`, fixing nothing.
    variants: ClassVar[Mapping[str, Mapping[str, Any]]] = MappingProxyType({})
    #: Constructor arguments that keep a run small (tests, smoke runs).
    quick_options: ClassVar[Mapping[str, Any]] = MappingProxyType({})
    #: Position in listings (the benchmark tables' rows); methods without one come last.
    listing_order: ClassVar[float] = math.inf
    #: The method reads token-to-token attention, which an attention pool (OpenAI/open_clip ResNets, SigLIP's
    #: head) does not have: :meth:`_probe` refuses such a block, and listings for such towers leave it out.
    needs_self_attention: ClassVar[bool] = False
    #: The method reads the residual stream through the adapter's ``probe_layer`` and ``project_tokens`` roles
    #: (:func:`~captum_gradeclip.adapters.dense.capability` names the loader that lacks them).
    needs_residual_access: ClassVar[bool] = False
    #: The method reads the explained attention block (:meth:`~captum_gradeclip.SimilarityWrapper.explained_blocks`),
    #: so its constructor checks that block. ``False``: it reads only the inputs and the scores (perturbation and
    #: pixel-gradient methods), and a broken block shows when the model runs, not when the method is built.
    reads_explained_block: ClassVar[bool] = True
    #: The maps are differences of two scores (the input's and a perturbed copy's) summed over each patch: their
    #: rounding is a few units of ``|score|`` per summed value, however small the difference, so comparisons
    #: of two computations allow :func:`~captum_gradeclip.baselines.captum_methods.score_difference_tolerance`.
    score_differences: ClassVar[bool] = False
    #: What the docs' tables say of the method where its requirements do not say it (keys: ``"vit"``, ``"resnet"``,
    #: ``"siglip"``, ``"text"``: a loader's row in docs/models.md; ``"pool"``: README's attention-pool column).
    loader_notes: ClassVar[Mapping[str, str]] = MappingProxyType({})

    def __new__(cls, *args: Any, **kwargs: Any) -> SimilarityAttribution:
        # every method's constructor: an unknown option is a TypeError listing the valid ones (Python's own
        # message names only the wrong one)
        check_options(cls, kwargs)
        return super().__new__(cls)

    def __init__(self, forward_func: SimilarityWrapper) -> None:
        self._bind(forward_func)
        super().__init__(forward_func)

    def _bind(self, forward_func: object, device_ids: list[int] | None = None) -> SimilarityWrapper:
        """Resolves and keeps the wrapper behind ``forward_func``; a TypeError for an unsupported modality."""
        wrapper = resolve_wrapper(forward_func, device_ids)
        if wrapper.modality not in self.modalities:
            raise TypeError(
                f"{self.get_name()} explains {' and '.join(self.modalities)} wrappers only; "
                f"got a {wrapper.modality} wrapper ({type(wrapper).__name__})"
            )
        self._wrapper = wrapper
        return wrapper

    @property
    def similarity(self) -> SimilarityWrapper:
        """The similarity wrapper that is explained (``forward_func`` itself, or the module behind it)."""
        return self._wrapper

    @classmethod
    def get_name(cls) -> str:
        return cls.method_name or cls.__name__

    def _probe(self, block: nn.Module, substitute: Substitute) -> contextlib.AbstractContextManager[AttentionRecord]:
        """The adapter's :meth:`~captum_gradeclip.adapters.Adapter.probe` at ``block``; for a method that
        declares :attr:`needs_self_attention`, a TypeError when the block turns out to be an attention pool."""
        if not self.needs_self_attention:
            return self.similarity.adapter.probe(block, substitute)

        def checked(record: AttentionRecord, o: Tensor) -> Tensor:
            if is_pool(record):
                raise TypeError(
                    f"{self.get_name()} needs token-to-token self-attention blocks; {type(record.block).__name__} "
                    f"is an attention pool ({record.tensor('q').shape[1]} query over "
                    f"{record.tensor('k').shape[1]} tokens). Use a method without that need "
                    "(captum_gradeclip.methods.available(attention_pool=True))"
                )
            return substitute(record, o)

        return self.similarity.adapter.probe(block, checked)

    def _pick_blocks(self, layer: nn.Module | None, layers: int | None, default: int | None) -> list[nn.Module]:
        """The ``layers`` consecutive attention blocks ending at ``layer`` (default: the last block; ``layers``
        defaults to ``default`` capped at the depth, or all blocks), each checked to be an attention block
        the adapter can read (a clear TypeError naming it otherwise)."""
        sim = self.similarity
        blocks = sim.explained_blocks()
        last = len(blocks) - 1 if layer is None else _block_index(sim, blocks, layer)
        if layers is None:
            layers = last + 1 if default is None else min(default, last + 1)
        if isinstance(layers, bool) or not isinstance(layers, int) or not 1 <= layers <= last + 1:
            raise ValueError(
                f"`layers` must be an int in [1, {last + 1}] (the blocks up to the explained layer); got {layers!r}"
            )
        picked = blocks[last - layers + 1 : last + 1]
        check_blocks(sim, picked, self.get_name())
        return picked

    # -- the pipeline ---------------------------------------------------------------------------
    @log_usage()
    def attribute(
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
            *Tensor* (or a 1-tuple, mirroring ``inputs``) of raw, unnormalised scores on
            the input's device: ``(N, 1, h, w)`` maps for images with a target, ``(N, M, h, w)`` with
            ``target=None``; ``(N, L)`` token scores for text with a target,
            ``(N, M, L)`` with ``target=None`` (SOS, EOS and padding score 0).
        """
        check_layer_input(attribute_to_layer_input, self.get_name())
        sim = self.similarity
        is_tuple, x, extra = format_inputs(sim, inputs, additional_forward_args)
        with _inference_mode_left(sim, x, extra) as (x, extra):
            out = self._attribute(sim, x, extra, target)
        return _format_output(is_tuple, (out,))

    def _attribute(self, sim: SimilarityWrapper, x: Tensor, extra: tuple, target: TargetType) -> Tensor:
        """The explanation of ``x`` (formatted), on ``x``'s device, before the output's tuple-ness."""
        device, home = run_device(self.forward_func, sim, x), x.device
        x = x.to(device)
        extra = tuple(a.to(device) if isinstance(a, Tensor) else a for a in extra)
        if any(m.training for m in sim.model.modules()):
            warnings.warn(
                "the model is in train mode (dropout and batch norm act as in training, so calls can differ): "
                "call model.eval() first; the explanation leaves the mode as it is",
                stacklevel=4,
            )
        columns = target_columns(target, x.shape[0], sim.num_references).to(x.device)  # (K, N)
        run, graph = self._plan()
        with deferred_checks(), preserved_model(sim, graph=graph), _half_precision_hint(x, sim):
            maps, ctx = run(x, extra, columns)
            out = maps if self.pixel_maps else _shape_output(maps, ctx)
            overflow = "the maps hold NaN or infinite values: the model's forward overflowed "
            require(
                torch.isfinite(out).all(), overflow + "(check the inputs' scale and the model's precision)", warn=True
            )
        if ctx.grid is None and target is not None:
            out = out[:, 0]  # per-token scores (N, L) for one target per example
        return out.to(home)

    def _plan(self) -> tuple[Callable[[Tensor, tuple, Tensor], tuple[Tensor, ExplainContext]], bool]:
        """How this call runs: ``run(inputs, extra, columns) -> (maps, ctx)``, and whether it builds an autograd
        graph (``False``: it differentiates with ``torch.func`` only, so no parameter needs switching off)."""
        return self._run_maps, True

    def _run_maps(self, inputs: Tensor, extra: tuple, columns: Tensor) -> tuple[Tensor, ExplainContext]:
        sim = self.similarity
        sim(inputs[:1], *(a[:1] if isinstance(a, Tensor) else a for a in extra))  # checks the inputs early
        ctx = sim.explain_context((inputs,), extra)
        return self._maps(inputs, extra, columns, ctx).detach(), ctx

    # -- what a method defines ------------------------------------------------------------------
    def _maps(self, inputs: Tensor, extra: tuple, columns: Tensor, ctx: ExplainContext) -> Tensor:
        """Maps ``(N, K, T)`` over tokens (or ``(N, K, H, W)`` with :attr:`pixel_maps`) for ``(K, N)`` columns."""
        raise NotImplementedError(f"{type(self).__name__} must implement `_maps`")


class AttentionAttribution(SimilarityAttribution, LayerAttribution, GradientAttribution):
    """Base class of explanations computed from the gradient at attention blocks of a similarity wrapper.

    A subclass defines :meth:`_layer_map` (one block's per-token map from its q/k/v and
    the gradient ``w`` of the score with respect to the block's pooled attention output)
    and :meth:`_combine` (the blocks merged); this class runs the forward pass with the
    graph starting at the first explained ``o`` (or, for one image block, the adapter's
    pooled tail: same result, less work) and takes one gradient per target column.

    Args:
        forward_func (ImageTextSimilarity or TextImageSimilarity): the wrapper to
            explain, its bound ``forward``, or the wrapper inside ``nn.DataParallel``
            (the explanation runs the wrapped module on the device it lives on).
        layer (nn.Module, optional): the last explained attention block, or a
            module that contains exactly one of the tower's attention blocks.
            Default: the last attention block of the explained tower.
        device_ids (list[int], optional): ``None``, or a ``DataParallel``'s own
            ``device_ids``; the explanation never splits the batch over devices.
        layers (int, optional): number of consecutive blocks, ending at
            ``layer``, to explain. Default: :attr:`default_layers` for the
            wrapper's modality, capped at the depth.

    Examples::

        >>> from captum.attr import Attribution, GradientAttribution, LayerAttribution
        >>> explainer = GradECLIP(sim)  # the one method built on this base
        >>> isinstance(explainer, (cg.AttentionAttribution, LayerAttribution, GradientAttribution))
        True
        >>> len(GradECLIP(sim, layers=2).blocks)  # the explained blocks, ending at the last one
        2
    """

    #: Use the adapter's pooled tail when one image block is explained (same result, less work).
    fast_path: bool = True

    #: Default number of explained blocks per modality.
    default_layers: ClassVar[dict[str, int]] = {"image": 1, "text": 1}

    def __init__(
        self,
        forward_func: SimilarityWrapper,
        layer: nn.Module | None = None,
        device_ids: list[int] | None = None,
        *,
        layers: int | None = None,
    ) -> None:
        wrapper = self._bind(forward_func, device_ids)
        self.blocks = self._pick_blocks(layer, layers, self.default_layers[wrapper.modality])
        LayerAttribution.__init__(self, forward_func, self.blocks[-1], device_ids)
        GradientAttribution.__init__(self, forward_func)

    @classmethod
    def get_name(cls) -> str:
        # the declared name, or Captum's: the class name, spaced
        return cls.method_name or super(SimilarityAttribution, cls).get_name()

    # -- what a method defines ------------------------------------------------------------
    def _substitute(self, record: AttentionRecord, o: Tensor) -> Tensor:
        """Replaces a block's ``o`` in the forward pass. Default: leaf at the first block."""
        return _as_leaf(record, o)

    def _pooled_output(self, tail: PooledTail, q_row: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """The pooled row of ``o`` on the fast path. Default: the model's own attention."""
        return tail.attend(q_row, k, v)

    @abstractmethod
    def _layer_map(self, record: AttentionRecord, w: Tensor, ctx: ExplainContext) -> Tensor:
        """Per-token maps ``(K, N, T)`` of one block from channel weights ``w = dS/do_pooled`` ``(K, N, C)``."""

    @abstractmethod
    def _combine(self, layer_maps: list[Tensor]) -> Tensor:
        """Merges the per-block maps ``(K, N, T)`` into one."""

    # -- the gradient pipeline --------------------------------------------------------------------
    def _plan(self) -> tuple[Callable[[Tensor, tuple, Tensor], tuple[Tensor, ExplainContext]], bool]:
        sim = self.similarity
        tail = sim.adapter.pooled_tail(self.blocks[0]) if self._fast_path_applies() else None
        if tail is not None and _hooks_the_tail_would_bypass(sim, self.blocks[0], tail.layer):
            tail = None  # the general path runs the model's own forward, user hooks included
        if tail is None:
            return self._run_probed, True
        # the fast path differentiates the pooled tail with torch.func only: no parameter needs switching off
        return functools.partial(self._run_tail, tail), False

    def _fast_path_applies(self) -> bool:
        return self.fast_path and len(self.blocks) == 1 and self.similarity.modality == "image"

    def _token_maps(
        self, records: list[AttentionRecord], weights: list[Tensor], ctx: ExplainContext
    ) -> tuple[Tensor, ExplainContext]:
        layer_maps = [self._layer_map(r, w, ctx) for r, w in zip(records, weights, strict=True)]
        dtype = records[0].tensor("v").dtype  # the model's: the maps' arithmetic may be upcast
        return self._combine(layer_maps).detach().transpose(0, 1).to(dtype), ctx  # (N, K, T)

    def _run_probed(self, x: Tensor, extra: tuple, columns: Tensor) -> tuple[Tensor, ExplainContext]:
        """General path: hook every explained block, backpropagate once per target column."""
        sim = self.similarity
        inputs = (x,)
        with contextlib.ExitStack() as probes:
            records = [probes.enter_context(sim.adapter.probe(b, self._substitute)) for b in self.blocks]
            scores = sim(*inputs, *extra)
        ctx = sim.explain_context(inputs, extra)
        rows = torch.arange(scores.shape[0], device=scores.device)
        outs = [r.tensor("o") for r in records]
        per_target = []
        for i, col in enumerate(columns):
            grads = torch.autograd.grad(scores[rows, col].sum(), outs, retain_graph=i + 1 < len(columns))
            per_target.append([g[rows, ctx.query_index] for g in grads])
        weights = [torch.stack(ws) for ws in zip(*per_target, strict=True)]  # per layer (K, N, C)
        return self._token_maps(records, weights, ctx)

    def _run_tail(self, tail: PooledTail, x: Tensor, extra: tuple, columns: Tensor) -> tuple[Tensor, ExplainContext]:
        """Fast path: no graph up to the block, then vector-Jacobian products of the pooled tail only."""
        sim = self.similarity
        inputs = (x,)
        with torch.no_grad():
            x = capture_input(tail.layer, lambda: sim(*inputs, *extra))
            q, k, v = tail.qkv(x)
        ctx = sim.explain_context(inputs, extra)
        rows = torch.arange(q.shape[0], device=q.device)
        record = AttentionRecord(num_heads=tail.num_heads, block=self.blocks[0], q=q, k=k, v=v)
        o_row = self._pooled_output(tail, q[rows, ctx.query_index], k, v)

        embeds, embed_vjp = _vjp(lambda o: tail.finish(x, o), o_row)
        n, e = embeds.shape
        m = sim.num_references
        if len(columns) <= e:  # K vector-Jacobian products through the score and the tail
            scores, score_vjp = _vjp(sim.similarity, embeds)
            # one-hot rows by comparison: F.one_hot checks its input's range, a host synchronisation on a GPU
            cotangents = (columns[..., None] == torch.arange(m, device=columns.device)).to(scores.dtype)
            if len(columns) == 1:  # one target per example: plain products, without vmap's batching ops
                (grad_embeds,) = score_vjp(cotangents[0])
                weights = embed_vjp(grad_embeds)[0][None]
            else:
                (grad_embeds,) = torch.func.vmap(score_vjp)(cotangents)  # (K, N, E): cheap, no model in it
                (weights,) = torch.func.vmap(embed_vjp)(grad_embeds)
        else:  # more targets than embedding dimensions: E products each way give both Jacobians, shared by all K
            basis = torch.eye(e, dtype=embeds.dtype, device=embeds.device)[:, None, :].expand(e, n, e)
            (d_embed,) = torch.func.vmap(embed_vjp)(basis)  # (E, N, C): d embedding_e / d o_row
            # d score / d embedding as Jacobian-vector products: the transpose of the (linear) score VJP, by one
            # more VJP (forward-mode AD would load TorchScript decompositions, deprecated in torch)
            _, score_vjp = _vjp(sim.similarity, embeds)
            cotangent = torch.zeros(n, m, dtype=embeds.dtype, device=embeds.device)
            _, transposed = _vjp(lambda u: score_vjp(u)[0], cotangent)
            (d_score,) = torch.func.vmap(transposed)(basis)  # (E, N, M)
            grad_embeds = d_score.gather(2, columns.T[None].expand(e, n, -1))  # (E, N, K): d score[n, column] / d e
            weights = torch.einsum("enk,enc->knc", grad_embeds, d_embed)
        record.o = o_row
        return self._token_maps([record], [weights.detach()], ctx)


def _hooks_the_tail_would_bypass(sim: nn.Module, block: nn.Module, layer: nn.Module) -> bool:
    """Whether user hooks sit where the fast path would not honour them.

    Forward (pre-)hooks on the explained block or its submodules, on the layer holding it or any module
    around that layer, or global ones: the fast path stops the forward at ``layer`` and recomputes the pooled
    row itself (the modules it calls, layer norms, MLP, projection, run their forward hooks as usual).
    Backward hooks (full, non-full or pre-hooks) on any module of the wrapper, or global ones: the fast path
    differentiates with ``torch.func``, which module backward hooks do not support, and it never
    backpropagates through the modules before the block. This package's own probe hooks
    (:func:`~captum_gradeclip.adapters.is_own_hook`, e.g. those of an explanation running in another thread)
    do not count.
    """
    module_hooks = nn.modules.module

    def user(*hooks: dict) -> bool:
        return any(not is_own_hook(hook) for table in hooks for hook in list(table.values()))

    if user(module_hooks._global_backward_hooks, module_hooks._global_backward_pre_hooks):
        return True
    if any(user(m._backward_hooks, m._backward_pre_hooks) for m in sim.modules()):
        return True
    if user(module_hooks._global_forward_hooks, module_hooks._global_forward_pre_hooks):
        return True

    def hooked(m: nn.Module) -> bool:
        return user(m._forward_hooks, m._forward_pre_hooks)

    if any(hooked(m) for m in block.modules()):
        return True
    path = next((name for name, m in sim.named_modules() if m is layer), None)
    if path is None:
        return False
    parts = path.split(".")
    return any(hooked(sim.get_submodule(".".join(parts[:i]))) for i in range(len(parts) + 1))


def _block_index(wrapper: SimilarityWrapper, blocks: list[nn.Module], layer: nn.Module) -> int:
    for i, block in enumerate(blocks):
        if block is layer:
            return i
    inside = [i for i, block in enumerate(blocks) if any(m is block for m in layer.modules())]
    if len(inside) == 1:
        return inside[0]
    raise ValueError(
        "`layer` must be one attention block of the explained tower, or a module holding exactly one; "
        f"got {type(layer).__name__} at `{module_name(wrapper.model, layer)}`, holding {len(inside)}"
    )


def _shape_output(maps: Tensor, ctx: ExplainContext) -> Tensor:
    """``(N, K, T)`` token maps to ``(N, K, h, w)`` for images or ``(N, K, L)`` for text."""
    if ctx.grid is None:
        return maps * ctx.output_mask[:, None, :].to(maps.dtype)
    n, k, t = maps.shape
    # the patch tokens are the last h*w (after the prefix): a slice, not a boolean index, which would
    # synchronise with a GPU to count its entries
    return maps[:, :, t - ctx.grid[0] * ctx.grid[1] :].reshape(n, k, *ctx.grid)
