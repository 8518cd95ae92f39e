"""Similarity-score wrapper modules: any CLIP as a tensor-in, tensor-out ``nn.Module``.

The wrappers are what every Captum method attributes. The reference side (texts
for :class:`ImageTextSimilarity`, images for :class:`TextImageSimilarity`) is
embedded once and kept as a buffer, so Captum's metrics, which repeat the
tensors they are given, never duplicate it; the target index picks a column.
"""

from __future__ import annotations

import contextlib
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captum_gradeclip.adapters import Adapter, Classifier, ImageTower, Scorer, TextTower, get_adapter
from captum_gradeclip.adapters.processing import ProcessingRole
from captum_gradeclip.vocabulary import warn_unknown_words

SCORES = ("cosine", "logit", "softmax")


@dataclass
class ExplainContext:
    """Where the explained tower pools and which tokens an explanation covers.

    Attributes:
        query_index: ``(N,)`` position of the pooled token (CLS or EOS).
        key_mask: ``(N, T)`` positions over which the loosened attention is
            min-max normalised.
        output_mask: ``(N, T)`` positions that the explanation reports.
        grid: ``(h, w)`` patch grid for images, ``None`` for text.
    """

    query_index: Tensor
    key_mask: Tensor
    output_mask: Tensor
    grid: tuple[int, int] | None

    def image_grid(self) -> tuple[int, int]:
        """The patch grid ``(h, w)`` of an image context; a TypeError for a text context, which has none.

        Examples::

            >>> sim.explain_context((pixel_values,), ()).image_grid()
            (8, 8)
            >>> tsim.explain_context((ids,), (mask,)).image_grid()
            Traceback (most recent call last):
                ...
            TypeError: a text explanation has no patch grid (only an image explanation's maps lie on one)
        """
        if self.grid is None:
            raise TypeError("a text explanation has no patch grid (only an image explanation's maps lie on one)")
        return self.grid


class SimilarityWrapper(nn.Module, ABC):
    """The published contract every explanation reads: a model turned into ``(N, M)`` scores to explain.

    :class:`ImageTextSimilarity`, :class:`TextImageSimilarity` and :class:`ImageClassification`
    derive from it, and every :class:`~captum_gradeclip.SimilarityAttribution` (Grad-ECLIP and
    the baselines) accepts any subclass. A subclass sets :attr:`modality`, calls
    ``super().__init__(model, score)`` (which finds the loader's adapter) and implements
    ``forward`` (inputs to scores ``(N, M)``) and :meth:`explain_context`; it inherits
    :attr:`num_references`, :meth:`similarity` (embeddings to scores: cosine, logit or
    softmax over the references) and :meth:`explained_blocks`.

    Attributes:
        model (nn.Module): the wrapped model, never changed by an explanation.
        adapter (Adapter): the loader's adapter (:func:`~captum_gradeclip.get_adapter`).
        modality (str): ``"image"`` or ``"text"``: the tower whose input ``forward`` takes.
        score (str): ``"cosine"``, ``"logit"`` or ``"softmax"``.

    Examples::

        >>> sim = ImageTextSimilarity(model, text_embeds=T)
        >>> isinstance(sim, cg.SimilarityWrapper), sim.modality, sim.num_references == len(texts)
        (True, 'image', True)
    """

    #: The tower whose input the wrapper takes, and which an explanation covers.
    modality: str = ""

    #: The accepted values of ``score``.
    scores: tuple[str, ...] = SCORES

    #: The normalised reference embeddings ``(M, E)``, a buffer (set by the subclass's constructor).
    reference_embeds: Tensor

    def __init__(self, model: nn.Module, score: str) -> None:
        """Finds ``model``'s adapter (a TypeError lists the supported loaders) and checks ``score``."""
        super().__init__()
        self.adapter: Adapter = get_adapter(model)
        if self.adapter.is_classifier and not isinstance(self, ImageClassification):
            raise TypeError(
                f"`model` {type(model).__name__} is an image classifier, not an image-text model: "
                "explain it with cg.ImageClassification(model), whose target is a class index"
            )
        if score not in self.scores:
            raise ValueError(f"`score` must be one of {self.scores}; got {score!r}")
        self.model = model
        self.score = score

    @property
    def num_references(self) -> int:
        """Number of output columns (texts or images to compare with)."""
        return int(self.reference_embeds.shape[0])

    def _set_references(self, embeds: Tensor, argument: str) -> None:
        if not isinstance(embeds, Tensor) or embeds.dim() != 2 or embeds.shape[0] == 0:
            raise ValueError(f"`{argument}` must be a non-empty (M, E) tensor; got {_describe(embeds)}")
        if not embeds.is_floating_point():
            raise TypeError(f"`{argument}` must be a floating-point tensor; got {_describe(embeds)}")
        if not torch.isfinite(embeds).all():
            raise ValueError(f"`{argument}` contains NaN or infinite values")
        zero = (embeds == 0).all(dim=-1).nonzero().flatten().tolist()
        if zero:
            warnings.warn(f"`{argument}` row(s) {zero} are all zeros: their scores and maps are 0", stacklevel=3)
        embeds = embeds.detach().to(_device_of(self.model))  # where the model is, wherever the user held them
        self.register_buffer("reference_embeds", F.normalize(embeds, dim=-1), persistent=False)
        if self.score == "softmax" and embeds.shape[0] == 1:
            other = "texts" if self.modality == "image" else "images"
            warnings.warn(
                f"score='softmax' over a single reference ({argument} holds one): its probability is always 1, so "
                f"the explanation is constant (all zero). Give several {other} to compete with, or use "
                "score='cosine'",
                UserWarning,
                stacklevel=3,
            )

    def similarity(self, embeds: Tensor) -> Tensor:
        """Scores ``(N, M)`` of query embeddings ``(N, E)`` against the references."""
        if embeds.shape[-1] != self.reference_embeds.shape[-1]:
            raise ValueError(
                f"reference embeddings have dimension {self.reference_embeds.shape[-1]}, "
                f"but the model embeds to {embeds.shape[-1]}"
            )
        refs = self.reference_embeds.to(embeds.dtype)
        cos = F.normalize(embeds, dim=-1) @ refs.T
        if self.score == "cosine":
            return cos
        logits = self.adapter.logit_scale().to(cos.dtype) * cos
        bias = self.adapter.logit_bias()
        if bias is not None:  # SigLIP: the softmax does not depend on it, the logit does
            logits = logits + bias.to(cos.dtype)
        return logits if self.score == "logit" else logits.softmax(dim=-1)

    def explained_blocks(self) -> list[nn.Module]:
        """Attention blocks of the explained tower, first to last."""
        return self.adapter.attention_blocks(self.modality)

    @abstractmethod
    def explain_context(self, inputs: tuple[Tensor, ...], additional_forward_args: tuple) -> ExplainContext:
        """Pooled position, key and output masks, and grid for a batch of inputs."""


#: The former private name of :class:`SimilarityWrapper`, kept for code that imported it.
_Similarity = SimilarityWrapper


class ImageTextSimilarity(SimilarityWrapper):
    r"""Scores images against a fixed set of texts: ``forward(pixel_values) -> (N, M)``.

    Args:
        model (nn.Module): a supported image-text model (see :mod:`captum_gradeclip.adapters`).
        texts (list[str] or Mapping, optional): the texts, either as strings (then
            ``tokenizer`` or ``processor`` is required) or as the tokenizer's output
            with ``input_ids`` and optionally ``attention_mask``.
        text_embeds (Tensor, optional): precomputed ``(M, E)`` text embeddings,
            instead of ``texts``.
        tokenizer, processor (optional): the loader's own tokenizer or processor,
            used for ``texts`` given as strings: a transformers tokenizer or
            processor, or a callable that returns a tensor of ids
            (``open_clip.get_tokenizer(name)``, ``clip.tokenize``). The adapter's
            processing role tokenises them as the model was trained (SigLIP: padded
            to its context), so a text's ids never depend on the texts beside it.
        score (str, optional): ``"cosine"`` (default), ``"logit"`` (cosine times
            the model's logit scale, plus its logit bias for SigLIP) or
            ``"softmax"`` (over the M texts).
        interpolate_pos_encoding (bool, optional): accept any input size that is a
            multiple of the patch size by interpolating the position embeddings.
            Default: True.

    Examples::

        >>> sim = ImageTextSimilarity(model, texts=["a red circle", "a blue square"], processor=processor)
        >>> sim(pixel_values).shape
        torch.Size([1, 2])
    """

    modality = "image"

    def __init__(
        self,
        model: nn.Module,
        texts: Sequence[str] | Mapping[str, Tensor] | None = None,
        *,
        text_embeds: Tensor | None = None,
        tokenizer: object | None = None,
        processor: object | None = None,
        score: str = "cosine",
        interpolate_pos_encoding: bool = True,
    ) -> None:
        """Wraps ``model`` as ``pixel_values -> (N, M)`` scores of the images against the M texts (or text
        embeddings); the arguments are those of the class (see above)."""
        super().__init__(model, score)
        self.adapter.require(ImageTower, "ImageTextSimilarity")
        self.adapter.require(Scorer, "ImageTextSimilarity")
        self.interpolate_pos_encoding = interpolate_pos_encoding
        if (texts is None) == (text_embeds is None):
            raise ValueError("give exactly one of `texts` and `text_embeds`")
        if text_embeds is None:
            self.adapter.require(TextTower, "ImageTextSimilarity with `texts`")
            context = self.adapter.text_context_length()
            input_ids, attention_mask = _tokenized(texts, tokenizer, processor, "texts", context, self.adapter)
            device = _device_of(model)
            input_ids = input_ids.to(device)
            attention_mask = attention_mask.to(device) if attention_mask is not None else None
            _check_text(self.adapter, input_ids, attention_mask)
            with torch.no_grad():
                text_embeds = self.adapter.embed_texts(input_ids, attention_mask)
            self._set_references(text_embeds, "texts")
        else:
            self._set_references(text_embeds, "text_embeds")

    def forward(self, pixel_values: Tensor) -> Tensor:
        _check_pixels(self.adapter, pixel_values, self.interpolate_pos_encoding)
        return self.similarity(self.adapter.embed_images(pixel_values, self.interpolate_pos_encoding))

    def explain_context(self, inputs: tuple[Tensor, ...], additional_forward_args: tuple) -> ExplainContext:
        return _image_context(self.adapter, inputs)


class TextImageSimilarity(SimilarityWrapper):
    r"""Scores texts against a fixed set of images: ``forward(input_ids, attention_mask) -> (N_txt, M_img)``.

    Args:
        model (nn.Module): a supported image-text model.
        images (Tensor, optional): ``(M, C, H, W)`` pixel values of the images.
        image_embeds (Tensor, optional): precomputed ``(M, E)`` image embeddings.
        score (str, optional): ``"cosine"`` (default), ``"logit"`` or ``"softmax"``
            (over the M images).
        interpolate_pos_encoding (bool, optional): as in :class:`ImageTextSimilarity`,
            for embedding ``images``. Default: True.

    Examples::

        >>> tsim = TextImageSimilarity(model, images=pixel_values)
        >>> tsim(batch["input_ids"], batch["attention_mask"]).shape
        torch.Size([3, 1])
    """

    modality = "text"

    def __init__(
        self,
        model: nn.Module,
        images: Tensor | None = None,
        *,
        image_embeds: Tensor | None = None,
        score: str = "cosine",
        interpolate_pos_encoding: bool = True,
    ) -> None:
        """Wraps ``model`` as ``input_ids -> (N_txt, M)`` scores of the texts against the M images (or image
        embeddings); the arguments are those of the class (see above)."""
        super().__init__(model, score)
        self.adapter.require(TextTower, "TextImageSimilarity")
        self.adapter.require(Scorer, "TextImageSimilarity")
        if (images is None) == (image_embeds is None):
            raise ValueError("give exactly one of `images` and `image_embeds`")
        if image_embeds is None:
            self.adapter.require(ImageTower, "TextImageSimilarity with `images`")
            _check_pixels(self.adapter, images, interpolate_pos_encoding, argument="images")
            images = images.to(_device_of(model))  # type: ignore[union-attr]  # _check_pixels: a tensor
            with torch.no_grad():
                image_embeds = self.adapter.embed_images(images, interpolate_pos_encoding)
            self._set_references(image_embeds, "images")
        else:
            self._set_references(image_embeds, "image_embeds")

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        _check_text(self.adapter, input_ids, attention_mask)
        return self.similarity(self.adapter.embed_texts(input_ids, attention_mask))

    def explain_context(self, inputs: tuple[Tensor, ...], additional_forward_args: tuple) -> ExplainContext:
        (input_ids,) = inputs
        attention_mask = additional_forward_args[0] if additional_forward_args else None
        query, keys, words = self.adapter.text_context(input_ids, attention_mask)
        return ExplainContext(query_index=query, key_mask=keys, output_mask=words, grid=None)


class ImageClassification(SimilarityWrapper):
    r"""Scores images by an image classifier's classes: ``forward(pixel_values) -> (N, K)``.

    The paper's adaptation of Grad-ECLIP to a plain ViT: the score is a class
    logit instead of an image-text cosine, and ``target`` selects the class. The
    explained block and the pooled token (CLS) are those of the classifier's ViT.

    Args:
        model (nn.Module): a supported image classifier (transformers
            ``ViTForImageClassification``).
        score (str, optional): ``"logit"`` (default: the class logit) or
            ``"softmax"`` (the class probability).
        interpolate_pos_encoding (bool, optional): accept any input size that is a
            multiple of the patch size by interpolating the position embeddings.
            Default: True.

    Examples::

        >>> from transformers import ViTConfig, ViTForImageClassification
        >>> config = ViTConfig(image_size=64, patch_size=8, hidden_size=32, num_hidden_layers=2,
        ...                    num_attention_heads=2, intermediate_size=64, num_labels=10)
        >>> clf = ImageClassification(ViTForImageClassification(config).eval())
        >>> clf(pixel_values).shape           # (N, num_labels)
        torch.Size([1, 10])
        >>> GradECLIP(clf).attribute(pixel_values, target=3).shape   # (N, 1, h, w)
        torch.Size([1, 1, 8, 8])
    """

    modality = "image"
    scores = ("logit", "softmax")

    def __init__(self, model: nn.Module, *, score: str = "logit", interpolate_pos_encoding: bool = True) -> None:
        """Wraps the classifier ``model`` as ``pixel_values -> (N, classes)`` scores; the arguments are those of
        the class (see above)."""
        super().__init__(model, score)
        if not isinstance(self.adapter, Classifier):
            raise TypeError(f"`model` {type(model).__name__} is not an image classifier ({self.adapter.loader_name})")
        self.adapter.require(ImageTower, "ImageClassification")
        self.interpolate_pos_encoding = interpolate_pos_encoding
        self.classes = self.adapter.num_classes()

    @property
    def num_references(self) -> int:
        """Number of output columns (classes)."""
        return self.classes

    def similarity(self, embeds: Tensor) -> Tensor:
        """Class scores ``(N, K)`` of pooled features ``(N, E)``."""
        logits = self.adapter.class_logits(embeds)
        return logits if self.score == "logit" else logits.softmax(dim=-1)

    def forward(self, pixel_values: Tensor) -> Tensor:
        _check_pixels(self.adapter, pixel_values, self.interpolate_pos_encoding)
        return self.similarity(self.adapter.embed_images(pixel_values, self.interpolate_pos_encoding))

    def explain_context(self, inputs: tuple[Tensor, ...], additional_forward_args: tuple) -> ExplainContext:
        return _image_context(self.adapter, inputs)


def _image_context(adapter: Adapter, inputs: tuple[Tensor, ...]) -> ExplainContext:
    """The pooled query is row 0 (CLS, or a pooling head's single query); patch tokens follow the prefix."""
    (pixel_values,) = inputs
    n = pixel_values.shape[0]
    grid = adapter.patch_grid(pixel_values)
    prefix = adapter.image_prefix_tokens
    tokens = prefix + grid[0] * grid[1]
    mask = torch.zeros(n, tokens, dtype=torch.bool, device=pixel_values.device)
    mask[:, prefix:] = True
    query = torch.zeros(n, dtype=torch.long, device=pixel_values.device)
    return ExplainContext(query_index=query, key_mask=mask, output_mask=mask, grid=grid)


# -- input checks ---------------------------------------------------------------------


def _describe(x: object) -> str:
    if isinstance(x, Tensor):
        return f"tensor of shape {tuple(x.shape)} and dtype {x.dtype}"
    return type(x).__name__


def _device_of(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _check_pixels(adapter: Adapter, pixel_values: object, interpolate: bool, argument: str = "pixel_values") -> None:
    if not isinstance(pixel_values, Tensor) or not pixel_values.is_floating_point():
        raise TypeError(f"`{argument}` must be a floating-point tensor; got {_describe(pixel_values)}")
    channels = adapter.num_channels()
    if pixel_values.dim() != 4 or pixel_values.shape[1] != channels:
        raise ValueError(f"`{argument}` must have shape (N, {channels}, H, W); got {tuple(pixel_values.shape)}")
    if pixel_values.shape[0] == 0:
        raise ValueError(f"`{argument}` is an empty batch")
    size = tuple(pixel_values.shape[-2:])
    if interpolate:
        ph, pw = adapter.patch_size()
        if size[0] % ph or size[1] % pw or size[0] < ph or size[1] < pw:
            raise ValueError(
                f"`{argument}` height and width must be positive multiples of the patch size {(ph, pw)}; got {size}"
            )
    elif size != adapter.image_size():
        raise ValueError(f"`{argument}` must be {adapter.image_size()} when interpolate_pos_encoding=False; got {size}")
    require(torch.isfinite(pixel_values).all(), f"`{argument}` contains NaN or infinite values")


#: The data checks waiting for the end of an explanation on an accelerator (see :func:`deferred_checks`):
#: ``(ok, message, warn)``.
_PENDING: ContextVar[list[tuple[Tensor, Message, bool]] | None] = ContextVar("captum_gradeclip_pending", default=None)

#: A message, or a function that builds it (from the data, only when the check failed).
Message = str | Callable[[], str]


def require(ok: Tensor, message: Message, *, warn: bool = False) -> None:
    """Raises ``ValueError(message)`` (or warns with it, for ``warn=True``) where the 0-d boolean ``ok`` is false.

    Reading ``ok`` synchronises the host with an accelerator. Inside :func:`deferred_checks`, a check of a
    tensor that is not on the CPU waits for the end of the block instead, where all of them are read at once.
    ``message`` may be a function that reads the data to say what failed: it runs only on failure.
    """
    pending = _PENDING.get()
    if pending is not None and ok.device.type != "cpu":
        pending.append((ok, message, warn))
    elif not bool(ok):
        _fail(message, warn)


def _fail(message: Message, warn: bool) -> None:
    text = message if isinstance(message, str) else message()
    if not warn:
        raise ValueError(text)
    warnings.warn(text, stacklevel=4)


@contextlib.contextmanager
def deferred_checks() -> Iterator[None]:
    """Collects the data checks of accelerator tensors in the block and reads them together at its end.

    An explanation on a GPU then synchronises the host once, not at every check; a failed check still
    raises its own ``ValueError`` (after the block's work, which is discarded) or gives its warning.
    """
    if _PENDING.get() is not None:  # nested: the outermost block reads them
        yield
        return
    pending: list[tuple[Tensor, Message, bool]] = []
    token = _PENDING.set(pending)
    try:
        yield
    finally:
        _PENDING.reset(token)
    if pending:
        flags = torch.stack([ok.to(pending[0][0].device) for ok, _, _ in pending])
        if not bool(flags.all()):  # the one read of the device; the failed checks are looked up only on failure
            failed = [(message, warn) for ok, (_, message, warn) in zip(flags.tolist(), pending, strict=True) if not ok]
            for message, warn in sorted(failed, key=lambda f: f[1]):  # errors first
                _fail(message, warn)


def _check_text(adapter: Adapter, input_ids: object, attention_mask: object) -> None:
    if not isinstance(input_ids, Tensor) or input_ids.is_floating_point() or input_ids.is_complex():
        raise TypeError(f"`input_ids` must be an integer tensor; got {_describe(input_ids)}")
    if input_ids.dtype == torch.bool:
        raise TypeError("`input_ids` must be an integer tensor; got dtype torch.bool")
    if input_ids.dim() != 2:
        raise ValueError(f"`input_ids` must have shape (N, L); got {tuple(input_ids.shape)}")
    if input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
        raise ValueError(f"`input_ids` is empty: shape {tuple(input_ids.shape)}")
    vocab = adapter.text_vocab_size()
    if vocab is not None:
        inside = (input_ids >= 0) & (input_ids < vocab)
        require(
            inside.all(),
            lambda: f"`input_ids` holds ids outside the vocabulary [0, {vocab}): {int(input_ids[~inside][0])}",
        )
    context = adapter.text_context_length()
    if context is not None and input_ids.shape[1] > context:
        raise ValueError(
            f"`input_ids` has {input_ids.shape[1]} tokens; the model's text context is {context} "
            "(cut longer texts: truncation=True)"
        )
    if attention_mask is not None:
        if not isinstance(attention_mask, Tensor) or attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"`attention_mask` must have the shape of `input_ids` {tuple(input_ids.shape)}; "
                f"got {_describe(attention_mask)}"
            )
        empty = "`attention_mask` marks a text with fewer than 2 tokens (an empty text)"
        require((attention_mask.sum(dim=-1) >= 2).all(), empty)
    elif input_ids.shape[1] < 2:
        raise ValueError("`input_ids` holds an empty text: fewer than 2 tokens")
    eos = adapter.text_eos_id()
    if eos is not None:
        present = input_ids == eos
        if attention_mask is not None:
            present = present & attention_mask.bool()
        ended = present.any(dim=-1)
        require(
            ended.all(),
            lambda: (
                f"`input_ids` row(s) {(~ended).nonzero().flatten().tolist()} hold no end-of-text token "
                f"(id {eos}): the model pools at position 0, so their scores and explanations mean little "
                "(padding only, or cut without an end token?)"
            ),
            warn=True,
        )


def _tokenized(
    texts: Sequence[str] | Mapping[str, Tensor] | None,
    tokenizer: Any,  # the loader's own: a transformers tokenizer, open_clip's or OpenAI clip's tokenize
    processor: Any,  # a transformers processor
    argument: str,
    context: int | None = None,
    adapter: object = None,
) -> tuple[Tensor, Tensor | None]:
    if isinstance(texts, Mapping):
        if "input_ids" not in texts:
            raise ValueError(f"`{argument}` given as a mapping must hold 'input_ids'")
        return texts["input_ids"], texts.get("attention_mask")
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise TypeError(f"`{argument}` must be a list of strings or a tokenizer output; got {type(texts).__name__}")
    if len(texts) == 0 or any(not isinstance(t, str) or not t.strip() for t in texts):
        raise ValueError(f"`{argument}` must be a non-empty list of non-empty strings")
    if tokenizer is None and processor is None:
        raise ValueError(f"`{argument}` given as strings needs `tokenizer` or `processor`")
    if isinstance(adapter, ProcessingRole):  # the loader's own tokenising (SigLIP: padded to its context)
        processing = adapter.processing(processor, tokenizer)
        ids, mask = processing.tokenize(list(texts))
        with contextlib.suppress(ValueError):  # a tokenizer without a vocabulary to count with cannot warn
            _warn_cut(argument, [processing.count_tokens(t) for t in texts], context or ids.shape[1])
        warn_unknown_words(texts, getattr(processing, "tokenizer", None), 4)
        return ids, mask
    if tokenizer is not None and not hasattr(tokenizer, "pad_token_id"):
        ids = tokenizer(list(texts))  # open_clip / OpenAI clip: a tensor of ids
        if not isinstance(ids, Tensor):
            raise TypeError(f"`tokenizer` must return a tensor of ids or a mapping; got {type(ids).__name__}")
        if hasattr(tokenizer, "encode"):  # open_clip's BPE tokenizer cuts silently at its context
            _warn_cut(argument, [len(tokenizer.encode(t)) + 2 for t in texts], ids.shape[1])
        return ids, None
    cut = {"truncation": True, "max_length": context} if context is not None else {}
    if tokenizer is not None:
        batch = tokenizer(list(texts), padding=True, return_tensors="pt", **cut)
        full = tokenizer(list(texts))["input_ids"]
    else:
        batch = processor(text=list(texts), padding=True, return_tensors="pt", **cut)
        full = processor(text=list(texts))["input_ids"]
    if context is not None:
        _warn_cut(argument, [len(ids) for ids in full], context)
    warn_unknown_words(texts, tokenizer if tokenizer is not None else getattr(processor, "tokenizer", None), 4)
    return batch["input_ids"], batch.get("attention_mask")


def _warn_cut(argument: str, lengths: list[int], context: int) -> None:
    for i, length in enumerate(lengths):
        if length > context:
            warnings.warn(
                f"`{argument}`: text {i} has {length} tokens; the model reads the first {context} (the rest is cut)",
                stacklevel=4,
            )
