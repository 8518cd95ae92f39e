"""The adapter contract: everything that is specific to one model loader.

Method code talks to models only through an :class:`Adapter`. Every adapter gives attention access: where the
attention blocks are, how to read the query/key/value projections and the attention output ``o`` (heads merged,
before the out-projection) of a block, its out-projection and, optionally, the fast path's pooled tail (usually
:func:`block_tail` naming the block's parts). The rest is split by role, and a loader derives from the roles its
model has: :class:`ImageTower` (image embeddings, blocks, patch grid), :class:`TextTower` (text embeddings,
blocks, pooled position), :class:`Scorer` (logit scale and bias), :class:`Classifier` (class logits),
:class:`ResidualAccess` (the residual stream at a block) and :class:`TokenProjection` (every token through the
tower's head).
"""

from __future__ import annotations

import contextlib
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captum_gradeclip.ops import pooled_attention


@dataclass
class AttentionRecord:
    """What a probe saw in one attention block during one forward pass.

    All tensors are batch-first with heads merged: ``(N, T, C)``.

    A pooling attention whose only query is the pooled one (the attention pool of
    a ResNet CLIP, SigLIP's multi-head attention pooling head) records ``q`` and
    ``o`` with that single row, ``(N, 1, C)``, and ``k`` and ``v`` with all ``T``
    key tokens.

    Attributes:
        q, k, v: the in-projections of the block's normalised input.
        o: the attention output before the out-projection, as it continued
            through the model (possibly substituted, see :meth:`Adapter.probe`).
        num_heads: the number of heads of the block.
        block: the probed attention module.
    """

    num_heads: int
    block: nn.Module | None = None
    q: Tensor | None = None
    k: Tensor | None = None
    v: Tensor | None = None
    o: Tensor | None = None

    def tensor(self, name: Literal["q", "k", "v", "o"]) -> Tensor:
        """The recorded ``q``, ``k``, ``v`` or ``o``; a RuntimeError naming it where the probe has not recorded it.

        Examples::

            >>> AttentionRecord(num_heads=1).tensor("v")
            Traceback (most recent call last):
                ...
            RuntimeError: the attention probe has recorded no `v`: no forward pass reached the probed block ...
        """
        value = getattr(self, name)
        if value is None:
            raise RuntimeError(_NOT_RECORDED.format(f"`{name}`"))
        return value

    def module(self) -> nn.Module:
        """The probed attention module; a RuntimeError where the record names none.

        Examples::

            >>> AttentionRecord(num_heads=1).module()
            Traceback (most recent call last):
                ...
            RuntimeError: the attention probe has recorded no block: no forward pass reached the probed block ...
        """
        if self.block is None:
            raise RuntimeError(_NOT_RECORDED.format("block"))
        return self.block


_NOT_RECORDED = (
    "the attention probe has recorded no {}: no forward pass reached the probed block within the probe's context "
    "(run the model inside `with adapter.probe(block, substitute) as record:`)"
)


@dataclass
class PooledTail:
    """An explained block and everything after it, for the pooled token only.

    After the last attention block, the pooled output depends on the other tokens
    only through the pooled row ``o_0`` of the attention output. An adapter that
    returns a tail lets the pipeline run the encoder to the block without a graph
    and differentiate only this small function.

    Attributes:
        layer: the module whose first positional input is the block input ``x``.
        num_heads: heads of the block's attention.
        qkv: ``x -> (q, k, v)``, each ``(N, T, C)``, batch-first, heads merged.
        attend: ``(q_row (N, C), k, v) -> o_row (N, C)``: the model's own attention
            for the pooled row, heads merged, before the out-projection.
        finish: ``(x, o_row) -> (N, E)`` embedding, as the model computes it.
    """

    layer: nn.Module
    num_heads: int
    qkv: Callable[[Tensor], tuple[Tensor, Tensor, Tensor]]
    attend: Callable[[Tensor, Tensor, Tensor], Tensor]
    finish: Callable[[Tensor, Tensor], Tensor]


def text_config_id(model: Any, name: str) -> int | None:
    """A transformers model's text-config token id (``"pad_token_id"``, ...), or ``None`` where it has none."""
    value = getattr(model.config.text_config, name, None)
    return None if value is None else int(value)


def block_tail(
    layer: nn.Module,
    num_heads: int,
    scale: float,
    qkv: Callable[[Tensor], tuple[Tensor, Tensor, Tensor]],
    out: Callable[[Tensor], Tensor],
    norm2: Callable[[Tensor], Tensor],
    mlp: Callable[[Tensor], Tensor],
    head: Callable[[Tensor], Tensor],
    *,
    layer_scale: tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]] | None = None,
    seq_first: bool = False,
) -> PooledTail:
    r"""The pooled tail of a pre-norm transformer block whose pooled token is token 0, from the block's parts.

    :math:`y = x_0 + \gamma_1 W_o\, o_0`, :math:`y \leftarrow y + \gamma_2\, \mathrm{MLP}(\mathrm{norm}_2(y))`,
    embedding :math:`\mathrm{head}(y)`, with the model's own multi-head attention for :math:`o_0`. Every ViT loader
    (transformers CLIP, ViT and BLIP, OpenAI clip, open_clip) is this block; an adapter names its parts.

    Args:
        layer (nn.Module): the residual block (its first input is ``x``).
        num_heads (int): heads of the attention.
        scale (float): the attention's logit scale.
        qkv (callable): ``x -> (q, k, v)`` batch-first, heads merged (the first norm and the in-projections).
        out (callable): the out-projection, applied without calling a hooked module
            (:func:`~captum_gradeclip.ops.projection`).
        norm2, mlp (callable): the second norm and the MLP.
        head (callable): the pooled token to the embedding (final norm, projection).
        layer_scale (tuple, optional): ``(ls_1, ls_2)``, open_clip's layer scales. Default: none.
        seq_first (bool, optional): ``x`` is ``(T, N, C)``. Default: False.
    """

    def attend(q_row: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return pooled_attention(q_row, k, v, num_heads, scale)

    def finish(x: Tensor, o_row: Tensor) -> Tensor:
        token, o = (x[0] if seq_first else x[:, 0]), out(o_row)
        y = token + (o if layer_scale is None else layer_scale[0](o))
        m = mlp(norm2(y))
        y = y + (m if layer_scale is None else layer_scale[1](m))
        return head(y)

    return PooledTail(layer=layer, num_heads=num_heads, qkv=qkv, attend=attend, finish=finish)


def interpolate_positions(pos: Tensor, prefix: int, native: tuple[int, int], grid: tuple[int, int]) -> Tensor:
    """Position embeddings ``(prefix + h*w, C)`` for a patch grid ``(h, w)``.

    The patch rows of ``pos`` (laid out on the ``native`` grid) are resized
    bicubically (``align_corners=False``, the rule of transformers'
    ``interpolate_pos_encoding``); the ``prefix`` rows (CLS) are kept. On the
    native grid ``pos`` is returned unchanged.

    Args:
        pos (Tensor): ``(prefix + H*W, C)`` position embeddings of the native grid.
        prefix (int): number of leading non-patch rows.
        native (tuple[int, int]): the native grid ``(H, W)``.
        grid (tuple[int, int]): the wanted grid ``(h, w)``.

    Returns:
        *Tensor* ``(prefix + h*w, C)``.
    """
    if tuple(grid) == tuple(native):
        return pos
    c = pos.shape[-1]
    patches = pos[prefix:].reshape(1, native[0], native[1], c).permute(0, 3, 1, 2)
    patches = F.interpolate(patches, size=tuple(grid), mode="bicubic", align_corners=False)
    return torch.cat([pos[:prefix], patches.permute(0, 2, 3, 1).reshape(-1, c)])


def pair(value: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """``7 -> (7, 7)``; a pair stays a pair of ints (patch sizes, image sizes, grids)."""
    if isinstance(value, int):
        return value, value
    return int(value[0]), int(value[1])


@dataclass
class LayerRecord:
    """What :meth:`Adapter.probe_layer` saw on the residual stream at one attention block.

    Attributes:
        x: the tokens entering the block's layer ``(N, T, C)``, batch-first, as they
            continued (possibly substituted).
        y: the layer's output tokens ``(N, T, C)``; ``(N, 1, C)`` where the layer
            pools (SigLIP's head).
    """

    x: Tensor | None = None
    y: Tensor | None = None


#: How a residual site holds its tokens: ``(N, T, C)``, ``(T, N, C)``, or a ResNet feature map ``(N, C, H, W)``
#: read as the attention pool reads it (the mean token first, then the positions in row-major order).
Layout = Literal["batch_first", "seq_first", "feature_map"]


@dataclass
class ResidualSite:
    """The module whose first input carries the residual stream into an attention block.

    Attributes:
        module: the layer (a transformer block), or the point where an attention
            pool's input feature map is read.
        layout: how ``module``'s input and output hold the tokens (see :data:`Layout`).
    """

    module: nn.Module
    layout: Layout = "batch_first"


def _to_tokens(value: Tensor, layout: Layout) -> Tensor:
    if layout == "seq_first":
        return value.transpose(0, 1)
    if layout == "feature_map":
        x = value.flatten(2).transpose(1, 2)
        return torch.cat([x.mean(dim=1, keepdim=True), x], dim=1)
    return value if value.dim() == 3 else value[:, None]


def _from_tokens(tokens: Tensor, like: Tensor, layout: Layout) -> Tensor:
    if layout == "seq_first":
        return tokens.transpose(0, 1)
    if layout == "feature_map":  # the pool recomputes its mean token from the positions
        return tokens[:, 1:].transpose(1, 2).reshape(like.shape)
    return tokens


#: The attribute that marks a hook as one of this package's own (see :func:`thread_owned`).
_OWNER = "_captum_gradeclip_owner"


def thread_owned(hook: Callable[..., object]) -> Callable[..., object]:
    """``hook``, acting only in the thread that wraps it (the one installing it); a pass-through in every other.

    A model shared between threads runs every thread's forward through the same modules, so a probe's hooks
    would see (and substitute into, or stop) the other threads' forwards too. Every hook this package installs
    is wrapped here: another thread's forward through a probed module is untouched. The wrapper takes any
    arguments, so a hook installed ``with_kwargs`` stays harmless even where a forward running in another
    thread calls it after its removal with the other calling convention.

    Examples::

        >>> import threading
        >>> hook = thread_owned(lambda *args: "seen")
        >>> hook(None, ()), is_own_hook(hook)
        ('seen', True)
        >>> other = []
        >>> t = threading.Thread(target=lambda: other.append(hook(None, ())))
        >>> t.start(); t.join()
        >>> other
        [None]
    """
    owner = threading.get_ident()

    def owned(*args: object) -> object:
        if threading.get_ident() != owner:
            return None
        return hook(*args)

    setattr(owned, _OWNER, owner)
    return owned


def is_own_hook(hook: object) -> bool:
    """Whether ``hook`` is one of this package's probe hooks (:func:`thread_owned`), not a user's."""
    return hasattr(hook, _OWNER)


@contextlib.contextmanager
def layer_probe(site: ResidualSite, substitute: Callable[[Tensor], Tensor] | None = None) -> Iterator[LayerRecord]:
    """Hooks ``site`` for one forward pass; see :meth:`Adapter.probe_layer`."""
    record = LayerRecord()

    def swap(value: Tensor) -> Tensor:
        record.x = _to_tokens(value, site.layout)
        if substitute is None:
            return value
        record.x = substitute(record.x)
        return _from_tokens(record.x, value, site.layout)

    def on_input(_module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if args:
            return (swap(args[0]), *args[1:]), kwargs
        key = "hidden_states" if "hidden_states" in kwargs else next(iter(kwargs))
        return args, {**kwargs, key: swap(kwargs[key])}

    def on_output(_module: nn.Module, _args: tuple, output: Any) -> None:  # a tensor, or a tuple that starts with one
        y = output if isinstance(output, Tensor) else output[0]
        record.y = _to_tokens(y, site.layout)

    handles = [
        site.module.register_forward_pre_hook(thread_owned(on_input), with_kwargs=True),
        site.module.register_forward_hook(thread_owned(on_output)),
    ]
    with hook_handles_removed(handles):
        yield record


class _Stop(Exception):
    def __init__(self, value: Tensor) -> None:
        self.value = value


def capture_input(layer: nn.Module, forward: Callable[[], object]) -> Tensor:
    """Runs ``forward`` until ``layer`` is reached and returns ``layer``'s first input; nothing after runs."""

    def stop(_module: nn.Module, args: tuple, kwargs: dict) -> None:
        raise _Stop(args[0] if args else next(iter(kwargs.values())))

    handle = layer.register_forward_pre_hook(thread_owned(stop), with_kwargs=True)
    try:
        forward()
    except _Stop as stopped:
        return stopped.value
    finally:
        handle.remove()
    raise RuntimeError(f"the forward pass never reached {type(layer).__name__}")


#: ``substitute(record, o) -> o'``: called when the block's ``o`` is known, before
#: the out-projection. Whatever it returns replaces ``o`` in the model's forward.
Substitute = Callable[[AttentionRecord, Tensor], Tensor]


_R = TypeVar("_R")


class MissingRole(AttributeError, TypeError):
    """A member of a role asked of an adapter that does not declare the role (an ``AttributeError``, so that
    ``hasattr`` is False, and a ``TypeError``, as the model does not support what was asked)."""


class Adapter(ABC):
    """Loader-specific knowledge about one model: the core every loader has (attention access).

    An adapter also implements the *roles* its model has, and only those: :class:`ImageTower`,
    :class:`TextTower`, :class:`Scorer` (image-text scores), :class:`Classifier` (class logits),
    :class:`ResidualAccess` (the residual stream at a block) and :class:`TokenProjection` (every token
    through the tower's head). The roles a class derives from are its declared capabilities
    (:meth:`capabilities`); code that needs one asks with :meth:`require`, which names the loader and
    what it lacks. Subclasses register themselves in :data:`captum_gradeclip.adapters.ADAPTERS`.

    A new loader is one class: ``class MyAdapter(Adapter, ImageTower, TextTower, Scorer)`` with
    :meth:`matches`, :meth:`probe` and :meth:`out_projection`, and each role's abstract members.

    Examples::

        >>> sim.adapter.capabilities()   # ShapesCLIP, a transformers CLIPModel
        ('ImageTower', 'TextTower', 'Scorer', 'ResidualAccess', 'TokenProjection')
    """

    #: Human readable name of the loader, used in error messages.
    loader_name: str = ""

    #: How the loader itself converts a model to low precision, for the error about a model that mixes dtypes
    #: (e.g. a model cast whole that the loader keeps partly in float32); empty when casting whole is the way.
    low_precision_advice: str = ""

    def __init__(self, model: nn.Module) -> None:
        #: The loader's model. Typed ``Any``: an adapter reaches into the loader's own attributes (``visual``,
        #: ``text_model``, ...), which ``nn.Module.__getattr__`` would type as ``Tensor | Module``.
        self.model: Any = model

    @classmethod
    @abstractmethod
    def matches(cls, model: object) -> bool:
        """Whether this adapter understands ``model``."""

    @classmethod
    def convert(cls, model: nn.Module, dtype: torch.dtype) -> nn.Module:
        """Converts ``model`` in place to ``dtype`` the loader's way and returns it (the default: cast whole).

        Raises:
            ValueError: where the loader cannot convert to ``dtype``.
        """
        return model.to(dtype)

    @classmethod
    def capabilities(cls) -> tuple[str, ...]:
        """The roles the adapter declares (derives from), by name, in the order of :data:`ROLES`."""
        return tuple(role.__name__ for role in ROLES if issubclass(cls, role))

    def require(self, role: type[_R], needed_by: str) -> _R:
        """``self`` as ``role``, or a TypeError naming ``needed_by``, the missing role and this loader.

        Examples::

            >>> sim.adapter.require(TextTower, "TextImageSimilarity") is sim.adapter
            True
        """
        if not isinstance(self, role):
            raise TypeError(
                f"{needed_by} needs {_ROLE_WORDS[role]} (the adapter role `{role.__name__}`), which the "
                f"{self.loader_name} adapter lacks (it declares: {', '.join(self.capabilities()) or 'none'})"
            )
        return self

    # Only reached when the normal lookup failed, and it always raises. Typed ``Any``: a role member reached on an
    # ``Adapter`` (``adapter.embed_texts``) is the adapter's own where it declares the role, MissingRole otherwise.
    def __getattr__(self, name: str) -> Any:
        role = next((r for r in ROLES if name in _members(r)), None)
        if role is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        raise MissingRole(
            f"the {self.loader_name} adapter has no `{name}`: it does not declare the adapter role `{role.__name__}` "
            f"({_ROLE_WORDS[role]}; it declares: {', '.join(self.capabilities()) or 'none'})"
        )

    @property
    def is_classifier(self) -> bool:
        """Whether the model is an image classifier (scored by class logits, the :class:`Classifier` role)."""
        return isinstance(self, Classifier)

    def module_name(self, module: nn.Module) -> str:
        """The dotted name of ``module`` in the model, for error messages (its class name if it is not there)."""
        return next((name for name, m in self.model.named_modules() if m is module), type(module).__name__)

    # -- attention access -------------------------------------------------------------
    def attention_blocks(self, modality: str) -> list[nn.Module]:
        """The attention modules of the ``"image"`` or ``"text"`` tower, in order (from the tower's role).

        Raises:
            TypeError: the adapter does not have that tower.
        """
        if modality == "image":
            return self.require(ImageTower, "explaining images").image_blocks()
        return self.require(TextTower, "explaining texts").text_blocks()

    def attention_pool(self, modality: str) -> bool:
        """Whether the tower's last attention block is a pool (one pooled query over the tokens: a ResNet's
        attention pool, SigLIP's head) rather than token-to-token self-attention (the default: False)."""
        return False

    @abstractmethod
    def probe(self, block: nn.Module, substitute: Substitute) -> contextlib.AbstractContextManager[AttentionRecord]:
        """Hooks ``block`` for one forward pass.

        Within the context, a forward pass fills the returned record's q, k, v and
        o, and lets ``substitute`` replace ``o``. All hooks are removed on exit.
        Every hook is wrapped in :func:`thread_owned`, so that the probe acts only
        in the thread that entered it (a model may be shared between threads).
        """

    def pooled_tail(self, block: nn.Module) -> PooledTail | None:
        """The fast path for ``block``, or ``None`` where it does not apply (the default)."""
        return None

    @abstractmethod
    def out_projection(self, block: nn.Module) -> Callable[[Tensor], Tensor]:
        """The block's out-projection ``o -> W_o o + b_o``, as a function that fires no hooks."""


class ImageTower(ABC):
    """Role: the model embeds images (a ViT with a class token, or an attention pool)."""

    model: Any  # the loader's model, as Adapter holds it

    #: Number of leading non-patch tokens (CLS) in the image sequence.
    image_prefix_tokens: int = 1

    @abstractmethod
    def embed_images(self, pixel_values: Tensor, interpolate_pos_encoding: bool) -> Tensor:
        """Image embeddings ``(N, E)``, not normalised."""

    @abstractmethod
    def image_blocks(self) -> list[nn.Module]:
        """The image tower's attention modules, first to last."""

    @abstractmethod
    def patch_size(self) -> tuple[int, int]:
        """Patch size ``(ph, pw)`` of the image tower."""

    @abstractmethod
    def image_size(self) -> tuple[int, int]:
        """The native input size ``(H, W)`` of the image tower."""

    @abstractmethod
    def num_channels(self) -> int:
        """Number of input channels of the image tower."""

    def patch_grid(self, pixel_values: Tensor) -> tuple[int, int]:
        """The ``(h, w)`` grid of patch tokens for ``pixel_values``."""
        ph, pw = self.patch_size()
        return pixel_values.shape[-2] // ph, pixel_values.shape[-1] // pw


class TextTower(ABC):
    """Role: the model embeds token ids, pooled at one position."""

    model: Any  # the loader's model, as Adapter holds it

    #: Whether each text token attends only to itself and earlier tokens (CLIP); ``False`` for a
    #: bidirectional text tower (SigLIP, BLIP).
    causal_text: bool = True

    @abstractmethod
    def embed_texts(self, input_ids: Tensor, attention_mask: Tensor | None) -> Tensor:
        """Text embeddings ``(N, E)``, not normalised."""

    @abstractmethod
    def text_blocks(self) -> list[nn.Module]:
        """The text tower's attention modules, first to last."""

    @abstractmethod
    def eos_index(self, input_ids: Tensor, attention_mask: Tensor | None) -> Tensor:
        """Per-sequence position ``(N,)`` of the pooled (EOS) token."""

    def text_context(self, input_ids: Tensor, attention_mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """Where the text tower pools and which tokens an explanation covers.

        The default is CLIP's causal text tower: the pooled token is :meth:`eos_index`;
        the keys are the positions up to it that ``attention_mask`` keeps; the reported
        tokens are those keys without the start token (position 0) and the pooled one.
        A bidirectional tower (SigLIP, BLIP) overrides this.

        Returns:
            ``(query_index (N,), key_mask (N, L), output_mask (N, L))``.
        """
        eos = self.eos_index(input_ids, attention_mask).to(input_ids.device)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        valid = positions[None, :] <= eos[:, None]
        if attention_mask is not None:
            valid = valid & attention_mask.bool()
        words = valid & (positions[None, :] > 0) & (positions[None, :] != eos[:, None])
        return eos, valid, words

    def pad_token_id(self) -> int | None:
        """The text tower's padding id, or ``None`` (the default: unknown)."""
        return None

    # -- what input checks need to know (None: unknown, not checked) ------------------------
    def text_vocab_size(self) -> int | None:
        """The text tower's vocabulary size: ``config.text_config.vocab_size`` or the model's ``vocab_size``."""
        return _text_attribute(self.model, "vocab_size")

    def text_context_length(self) -> int | None:
        """The most tokens the text tower reads: ``max_position_embeddings`` or the model's ``context_length``."""
        return _text_attribute(self.model, "max_position_embeddings", "context_length")

    def text_eos_id(self) -> int | None:
        """The token id the text tower pools at, when it pools at a fixed id (default: ``None``)."""
        return None


class Scorer(ABC):
    """Role: image-text scores, a logit scale (and bias) over the cosine of the two embeddings."""

    @abstractmethod
    def logit_scale(self) -> Tensor:
        """The model's (exponentiated) logit scale as a 0-d tensor."""

    def logit_bias(self) -> Tensor | None:
        """The model's logit bias as a 0-d tensor (SigLIP), or ``None`` (the default: no bias)."""
        return None


class Classifier(ABC):
    """Role: an image classifier, scored by class logits of the pooled image features."""

    @abstractmethod
    def num_classes(self) -> int:
        """Number of classes of the classifier's head."""

    @abstractmethod
    def class_logits(self, features: Tensor) -> Tensor:
        """Class logits ``(N, K)`` of pooled image features ``(N, E)`` (see :meth:`ImageTower.embed_images`)."""


class ResidualAccess(ABC):
    """Role: the residual stream entering an attention block (Grad-CAM, MaskCLIP, CLIP Surgery, M2IB)."""

    @abstractmethod
    def residual_site(self, block: nn.Module) -> ResidualSite | None:
        """Where the residual stream enters attention ``block``, or ``None`` where the loader has no access."""

    def probe_layer(
        self, block: nn.Module, substitute: Callable[[Tensor], Tensor] | None = None
    ) -> contextlib.AbstractContextManager[LayerRecord]:
        """Hooks the residual layer that holds attention ``block`` for one forward pass.

        Within the context, a forward pass fills the record's ``x`` (the layer's input
        tokens, after ``substitute`` if given, whose batch-first ``(N, T, C)`` result
        replaces them) and ``y`` (its output tokens). All hooks are removed on exit.
        At an attention pool (ResNet) the tokens are the pooled feature map's, with
        the mean token first; a substitute's mean token is ignored, as the pool
        recomputes it.

        Raises:
            TypeError: if the adapter has no residual access to ``block``.
        """
        site = self.residual_site(block)
        if site is None:
            raise TypeError(
                f"the {getattr(self, 'loader_name', type(self).__name__)} adapter has no residual-stream access to "
                f"{type(block).__name__} (`probe_layer`)"
            )
        return layer_probe(site, substitute)


class TokenProjection(ABC):
    """Role: every token through what follows the tower's last attention layer (MaskCLIP, CLIP Surgery)."""

    @abstractmethod
    def project_tokens(self, tokens: Tensor, modality: str) -> Tensor:
        """Every token through what follows the tower's last attention layer: ``(N, T, C) -> (N, T, E)``.

        For a transformer tower, ``tokens`` are the residual stream after the last
        layer, and this is the final norm and projection. After an attention pool
        (ResNet, SigLIP's head), ``tokens`` are outputs of the pool's out-projection,
        and this is whatever the model applies to the pooled one.
        """


#: The adapter roles, in the order :meth:`Adapter.capabilities` lists them.
ROLES: tuple[type, ...] = (ImageTower, TextTower, Scorer, Classifier, ResidualAccess, TokenProjection)

_ROLE_WORDS: dict[type, str] = {
    ImageTower: "an image tower",
    TextTower: "a text tower",
    Scorer: "image-text scores",
    Classifier: "an image classifier's head",
    ResidualAccess: "residual-stream access",
    TokenProjection: "token projection",
}


def _members(role: type) -> frozenset[str]:
    """The public names a role defines (its methods and attributes)."""
    return frozenset(name for name in vars(role) if not name.startswith("_"))


def _text_attribute(model: nn.Module, *names: str) -> int | None:
    text_config = getattr(getattr(model, "config", None), "text_config", None)
    for owner in (text_config, model, getattr(model, "text", None)):
        for name in names:
            value = getattr(owner, name, None) if owner is not None else None
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None


def hook_handles_removed(handles: list[torch.utils.hooks.RemovableHandle]) -> contextlib.ExitStack:
    """An exit stack that removes every handle in ``handles`` when closed."""
    stack = contextlib.ExitStack()
    for handle in handles:
        stack.callback(handle.remove)
    return stack


@contextlib.contextmanager
def linear_probe(
    block: nn.Module,
    q_proj: nn.Module,
    k_proj: nn.Module,
    v_proj: nn.Module,
    out_proj: nn.Module,
    num_heads: int,
    substitute: Substitute,
) -> Iterator[AttentionRecord]:
    """A probe for attention modules with separate q/k/v/out ``nn.Linear`` layers."""
    record = AttentionRecord(num_heads=num_heads, block=block)

    def keep(name: str) -> Callable:
        def hook(_module: nn.Module, _args: tuple, output: Tensor) -> None:
            setattr(record, name, output)

        return hook

    def on_o(_module: nn.Module, args: tuple) -> tuple:
        record.o = substitute(record, args[0])
        return (record.o, *args[1:])

    handles = [
        q_proj.register_forward_hook(thread_owned(keep("q"))),
        k_proj.register_forward_hook(thread_owned(keep("k"))),
        v_proj.register_forward_hook(thread_owned(keep("v"))),
        out_proj.register_forward_pre_hook(thread_owned(on_o)),
    ]
    with hook_handles_removed(handles):
        yield record
