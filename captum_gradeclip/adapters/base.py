"""The adapter contract: everything that is specific to one model loader.

Method code talks to models only through an :class:`Adapter`. An adapter knows how
to embed images and texts, where the attention blocks are, how to read the
query/key/value projections and the attention output ``o`` (heads merged, before
the out-projection) of a block, the patch grid and the EOS position.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass
class AttentionRecord:
    """What a probe saw in one attention block during one forward pass.

    All tensors are batch-first with heads merged: ``(N, T, C)``.

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


#: ``substitute(record, o) -> o'``: called when the block's ``o`` is known, before
#: the out-projection. Whatever it returns replaces ``o`` in the model's forward.
Substitute = Callable[[AttentionRecord, Tensor], Tensor]


class Adapter(ABC):
    """Loader-specific knowledge about one image-text model.

    Subclasses register themselves in :data:`captum_gradeclip.adapters.ADAPTERS`.
    """

    #: Human readable name of the loader, used in error messages.
    loader_name: str = ""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    @classmethod
    @abstractmethod
    def matches(cls, model: object) -> bool:
        """Whether this adapter understands ``model``."""

    # -- embeddings -------------------------------------------------------------
    @abstractmethod
    def embed_images(self, pixel_values: Tensor, interpolate_pos_encoding: bool) -> Tensor:
        """Image embeddings ``(N, E)``, not normalised."""

    @abstractmethod
    def embed_texts(self, input_ids: Tensor, attention_mask: Tensor | None) -> Tensor:
        """Text embeddings ``(N, E)``, not normalised."""

    @abstractmethod
    def logit_scale(self) -> Tensor:
        """The model's (exponentiated) logit scale as a 0-d tensor."""

    # -- structure ------------------------------------------------------------------
    @abstractmethod
    def attention_blocks(self, modality: str) -> list[nn.Module]:
        """The attention modules of the ``"image"`` or ``"text"`` tower, in order."""

    @abstractmethod
    def probe(self, block: nn.Module, substitute: Substitute) -> contextlib.AbstractContextManager[AttentionRecord]:
        """Hooks ``block`` for one forward pass.

        Within the context, a forward pass fills the returned record's q, k, v and
        o, and lets ``substitute`` replace ``o``. All hooks are removed on exit.
        """

    @abstractmethod
    def out_projection(self, block: nn.Module) -> Callable[[Tensor], Tensor]:
        """The block's out-projection ``o -> W_o o + b_o``, as a function that fires no hooks."""

    # -- geometry ---------------------------------------------------------------------
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

    #: Number of leading non-patch tokens (CLS) in the image sequence.
    image_prefix_tokens: int = 1

    @abstractmethod
    def eos_index(self, input_ids: Tensor, attention_mask: Tensor | None) -> Tensor:
        """Per-sequence position ``(N,)`` of the pooled (EOS) token."""


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
        q_proj.register_forward_hook(keep("q")),
        k_proj.register_forward_hook(keep("k")),
        v_proj.register_forward_hook(keep("v")),
        out_proj.register_forward_pre_hook(on_o),
    ]
    with hook_handles_removed(handles):
        yield record
