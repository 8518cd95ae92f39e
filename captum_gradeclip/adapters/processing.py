"""The processing role: the one place that knows a loader's inputs.

An adapter that derives from :class:`ProcessingRole` turns the loader's own processor (a transformers processor,
open_clip's or OpenAI ``clip``'s preprocess and tokenizer) into a :class:`Processing`: images to pixel values,
texts to ids as the model was trained (SigLIP: padded to ``max_length``), ids to token strings and words, and
the inverse preprocessing geometry (:mod:`captum_gradeclip.adapters.geometry`). A loader whose models can be
named by a spec (``openai:NAME``) also loads them (:meth:`ProcessingRole.load_spec`);
:func:`captum_gradeclip.load` dispatches on the spec's prefix.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from captum_gradeclip.adapters.geometry import Geometry, read_geometry


class LoadError(ValueError):
    """A model spec that cannot be loaded; the message is one line that names the spec and what to do."""


class Processing(ABC):
    """A loader's inputs for one model and its processor.

    Attributes:
        processor: the loader's own processor (or preprocess), as given.
        mean, std (tuple[float, ...]): the pixel normalisation.
        max_tokens (int or None): the text tower's context length (longer texts are cut).
    """

    processor: Any
    mean: tuple[float, ...]
    std: tuple[float, ...]
    max_tokens: int | None

    @abstractmethod
    def pixels(self, images: object) -> Tensor:
        """One PIL image, or a list of them -> ``(N, C, H, W)`` pixel values, as the loader preprocesses them."""

    @abstractmethod
    def tokenize(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """``texts`` -> ``(input_ids, attention_mask)``, each text's ids the same whatever texts are beside it."""

    @abstractmethod
    def tokens(self, ids: Tensor) -> list[str]:
        """``(L,)`` ids of one text -> its token strings (for :meth:`words`)."""

    @abstractmethod
    def count_tokens(self, text: str) -> int:
        """The text's length in tokens, without truncation."""

    @property
    def image_transform(self) -> object:
        """The part of the processor that prepares images (what :func:`read_geometry` reads)."""
        return getattr(self.processor, "image_processor", self.processor)

    def geometry(self, size: tuple[int, int]) -> Geometry:
        """The preprocessing geometry on an original image of ``size`` ``(H, W)`` (see :func:`read_geometry`)."""
        return read_geometry(self.image_transform, size)

    def to_original(self, maps: Tensor, image: object, mode: str = "bilinear") -> Tensor:
        """``(..., h, w)`` maps on the model's grid -> ``(..., H, W)`` on ``image``, NaN where it was not seen."""
        return self.geometry(image_size(image)).to_original(maps, mode)

    def seen_image(self, pixel_values: Tensor) -> np.ndarray:
        """``(1, C, H, W)`` or ``(C, H, W)`` normalised pixels -> ``(H, W, C)`` in [0, 1]: what the model saw."""
        values = pixel_values[0] if pixel_values.dim() == 4 else pixel_values
        mean = torch.tensor(self.mean).view(-1, 1, 1)
        std = torch.tensor(self.std).view(-1, 1, 1)
        return (values.detach().cpu().float() * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()

    def words(self, ids: Tensor, scores: Tensor, text: str | None = None) -> list[tuple[str, float]]:
        """Token scores of one text merged into words (see :func:`captum_gradeclip.words`)."""
        from captum_gradeclip.vocabulary import words

        return words(self.tokens(ids), scores, text=text)


def image_size(image: object) -> tuple[int, int]:
    """``(H, W)`` of a PIL image, an ``(H, W, C)`` array, a ``(C, H, W)`` / ``(1, C, H, W)`` tensor, or a pair."""
    if isinstance(image, tuple) and len(image) == 2 and all(isinstance(s, int) for s in image):
        return int(image[0]), int(image[1])
    if hasattr(image, "size") and isinstance(image.size, tuple) and len(image.size) == 2:  # PIL: (W, H)
        return int(image.size[1]), int(image.size[0])
    shape = tuple(getattr(image, "shape", ()))
    if isinstance(image, Tensor) and len(shape) in (3, 4):
        return int(shape[-2]), int(shape[-1])
    if isinstance(image, np.ndarray) and len(shape) in (2, 3):
        return int(shape[0]), int(shape[1])
    raise ValueError(
        f"`image` must be a PIL image, an (H, W, C) array or a (C, H, W) tensor; got {type(image).__name__}"
    )


class HFProcessing(Processing):
    """A transformers processor (or a processor called like one, such as the ResNet ShapesCLIP's).

    Args:
        processor (object): the processor, or a tokenizer alone (then :meth:`pixels` is refused).
        padding (str, optional): ``"longest"`` for towers whose pooled token does not see padding (causal, or
            masked), ``"max_length"`` for those trained with fixed-length texts (SigLIP). Default: ``"longest"``.
        max_tokens (int, optional): the context length. Default: the tokenizer's ``model_max_length``.
        tokenizer (object, optional): a tokenizer to use instead of the processor's own. Default: the processor's.
    """

    def __init__(
        self, processor: Any, padding: str = "longest", max_tokens: int | None = None, tokenizer: Any = None
    ) -> None:
        if padding not in ("longest", "max_length"):
            raise ValueError(f"`padding` must be 'longest' or 'max_length'; got {padding!r}")
        self.processor = processor
        self.tokenizer = tokenizer if tokenizer is not None else getattr(processor, "tokenizer", processor)
        self.padding = padding
        image_processor = getattr(processor, "image_processor", processor)
        self.mean = tuple(float(m) for m in getattr(image_processor, "image_mean", (0.0, 0.0, 0.0)))
        self.std = tuple(float(s) for s in getattr(image_processor, "image_std", (1.0, 1.0, 1.0)))
        if max_tokens is None:
            limit = getattr(self.tokenizer, "model_max_length", None)
            max_tokens = int(limit) if isinstance(limit, int) and limit < 1_000_000 else None
        self.max_tokens = max_tokens

    def pixels(self, images: object) -> Tensor:
        if self.processor is None or (
            hasattr(self.processor, "pad_token_id") and not hasattr(self.processor, "image_processor")
        ):
            raise ValueError("images need the loader's processor (with an image processor); got a tokenizer alone")
        return self.processor(images=images, return_tensors="pt")["pixel_values"]

    def tokenize(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        cut: dict[str, object] = {"truncation": True}
        if self.max_tokens is not None:
            cut["max_length"] = self.max_tokens
        padding: str | bool = "max_length" if self.padding == "max_length" else True
        if self.processor is self.tokenizer or self.tokenizer is not getattr(self.processor, "tokenizer", None):
            batch = self.tokenizer(list(texts), padding=padding, return_tensors="pt", **cut)
        else:  # the processor's own call (the ResNet ShapesCLIP's pads to its context)
            batch = self.processor(text=list(texts), padding=padding, return_tensors="pt", **cut)
        ids = batch["input_ids"]
        return ids, batch.get("attention_mask", torch.ones_like(ids))

    def tokens(self, ids: Tensor) -> list[str]:
        return self.tokenizer.convert_ids_to_tokens(ids.tolist())

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text)["input_ids"])


class BPEProcessing(Processing):
    """open_clip's and OpenAI ``clip``'s inputs: a torchvision preprocess and a CLIP BPE tokenizer.

    Args:
        preprocess (callable or None): ``PIL.Image -> (C, H, W)`` (a torchvision ``Compose``); ``None`` where
            only texts are processed.
        encode (callable): ``list[str] -> (N, context)`` ids, padded with 0 to the context (``clip.tokenize``,
            ``open_clip.get_tokenizer(arch)``).
        bpe (object, optional): the BPE tokenizer with ``encode`` and ``decoder``. Default: ``encode`` where it
            has them (open_clip's tokenizer).
        max_tokens (int, optional): the context length. Default: 77.
    """

    def __init__(
        self, preprocess: Callable | None, encode: Callable, bpe: Any = None, max_tokens: int | None = 77
    ) -> None:
        if bpe is None and hasattr(encode, "decoder") and hasattr(encode, "encode"):
            bpe = encode
        self.processor = preprocess
        self.encode = encode
        self.bpe = bpe
        self.max_tokens = max_tokens
        self.mean, self.std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        for step in getattr(preprocess, "transforms", []):
            if type(step).__name__ == "Normalize":
                self.mean = tuple(float(m) for m in step.mean)
                self.std = tuple(float(s) for s in step.std)

    def pixels(self, images: object) -> Tensor:
        if isinstance(images, (list, tuple)):
            return torch.stack([self.processor(image) for image in images])
        return self.processor(images)[None]

    def tokenize(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        ids = self.encode(list(texts))  # always the full context: a text's ids never depend on the others
        return ids, (ids != 0).long()

    def _bpe(self) -> Any:
        if self.bpe is None:
            raise ValueError("this tokenizer has no BPE vocabulary (`decoder`); give the BPE tokenizer as `bpe`")
        return self.bpe

    def tokens(self, ids: Tensor) -> list[str]:
        return [self._bpe().decoder.get(int(i), "") for i in ids]

    def count_tokens(self, text: str) -> int:
        return len(self._bpe().encode(text)) + 2  # + start and end

    def words(self, ids: Tensor, scores: Tensor, text: str | None = None) -> list[tuple[str, float]]:
        """Token scores of one text merged into words, without the start, end and padding tokens."""
        from captum_gradeclip.vocabulary import words

        bpe = self._bpe()
        encoder = getattr(bpe, "encoder", {})
        special = {0} | {
            int(encoder[t])
            for t in ("<|startoftext|>", "<|endoftext|>", "<start_of_text>", "<end_of_text>")
            if t in encoder
        }
        special |= {
            int(i) for i in (getattr(bpe, "sot_token_id", None), getattr(bpe, "eot_token_id", None)) if i is not None
        }
        keep = torch.tensor([int(i) not in special for i in ids], dtype=torch.bool)
        return words(self.tokens(ids[keep]), torch.as_tensor(scores)[keep], text=text)


class ProcessingRole(ABC):
    """Role: the loader's inputs (:meth:`processing`) and, for a loader with a spec prefix, its loading.

    A loader sets :attr:`spec_prefixes` (``("openai",)``) and implements :meth:`load_spec` to be loadable by
    :func:`captum_gradeclip.load`; the first adapter of :data:`~captum_gradeclip.adapters.ADAPTERS` that
    claims a prefix loads it.
    """

    #: The spec prefixes this loader loads (``"hf"`` loads ``hf:NAME``).
    spec_prefixes: tuple[str, ...] = ()

    @abstractmethod
    def processing(self, processor: object, tokenizer: object = None) -> Processing:
        """The :class:`Processing` of this adapter's model with the loader's own ``processor`` (a transformers
        processor, or an image preprocess) and ``tokenizer`` (where the processor has none)."""

    @classmethod
    def load_spec(cls, name: str, spec: str, *, allow_missing_weights: bool = False) -> tuple[nn.Module, object]:
        """Loads ``spec`` (``PREFIX:NAME``; ``name`` is the part after the prefix) -> ``(model, processor)``.

        Raises:
            LoadError: one line that names the spec.
        """
        raise LoadError(f"{spec}: the {getattr(cls, 'loader_name', cls.__name__)} adapter loads no specs")


def first_line(error: BaseException) -> str:
    """The first line of an error's message (its type's name when it has none)."""
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def hf_like(processor: object) -> bool:
    """Whether ``processor`` is called like a transformers processor or tokenizer (``text=``, ``padding=``)."""
    return hasattr(processor, "tokenizer") or hasattr(processor, "pad_token_id") or hasattr(processor, "do_resize")
