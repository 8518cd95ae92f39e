"""ShapesCLIP: small CLIPs trained by this project on the shapes world, shipped inside the package.

Two backbones, both loaded fully offline from package data (safetensors and json only):

- ``"vit"``: an HF ``CLIPModel`` in a ``from_pretrained`` directory (``config.json``,
  ``model.safetensors``, the ``CLIPProcessor`` with its word-level tokenizer);
- ``"resnet"``: an open_clip ``CLIP`` whose image tower is open_clip's ``ModifiedResNet`` (the
  attention pool), built from ``open_clip_config.json`` and loaded from ``model.safetensors``,
  with a :class:`ShapesProcessor` (needs the ``openclip`` extra).

Each directory also holds ``training.json``: the training settings, time and measured quality.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

if TYPE_CHECKING:  # pragma: no cover
    from transformers import BatchEncoding

#: Backbones and the package directory that holds each one's weights.
BACKBONES: dict[str, str] = {
    "vit": "shapes_clip_vit",
    "resnet": "shapes_clip_resnet",
    "vit-deep": "shapes_clip_vit_deep",
}
#: The ``--model`` spec of each backbone, read by the command line and the benchmarks.
MODEL_SPECS: dict[str, str] = {"shapes": "vit", "shapes:resnet": "resnet", "shapes:deep": "vit-deep"}

#: The open_clip model's config file in the ResNet directory (``open_clip.model.CLIP`` keyword arguments).
OPEN_CLIP_CONFIG = "open_clip_config.json"


def shapes_clip_path(backbone: str = "vit") -> Path:
    """The directory of the shipped ``backbone`` (for ``"vit"``, loadable with ``CLIPModel.from_pretrained``).

    Raises:
        ValueError: if ``backbone`` is unknown.
        FileNotFoundError: if the package was installed without its weights.

    Examples::

        >>> from transformers import CLIPModel
        >>> path = cg.zoo.shapes_clip_path()
        >>> (path / "model.safetensors").is_file()
        True
        >>> type(CLIPModel.from_pretrained(path)).__name__  # what load_shapes_clip() does, plus its processor
        'CLIPModel'
    """
    if backbone not in BACKBONES:
        raise ValueError(f"`backbone` must be one of {sorted(BACKBONES)}; got {backbone!r}")
    path = Path(str(resources.files("captum_gradeclip.zoo") / BACKBONES[backbone]))
    if not (path / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"the ShapesCLIP weights are missing from the installed package (looked in {path}); "
            "reinstall captum-gradeclip"
        )
    return path


def training_info(backbone: str = "vit") -> dict:
    """The settings, training time and held-out quality recorded when the shipped weights were trained.

    Examples::

        >>> info = cg.zoo.training_info()
        >>> "quality" in info and "config" in info
        True
    """
    return json.loads((shapes_clip_path(backbone) / "training.json").read_text())


def load_shapes_clip(backbone: str = "vit", device: str | torch.device = "cpu") -> tuple[torch.nn.Module, object]:
    """Loads the embedded ShapesCLIP, offline.

    Args:
        backbone (str, optional): ``"vit"``, an HF ``CLIPModel`` (ViT, 64x64 input, patch 8), or
            ``"resnet"``, an open_clip ``CLIP`` with a ``ModifiedResNet`` image tower (the 64x64
            scenes resized to 128x128: a 4x4 grid at stride 32; needs the ``openclip`` extra), or
            ``"vit-deep"``, ShapesCLIP-Deep: an HF ``CLIPModel`` with 6 layers (the 64x64 scenes resized to
            112x112, patch 8: a 14x14 grid). Default: ``"vit"``.
        device (str or torch.device, optional): where to put the model. Default: ``"cpu"``.

    Returns:
        *tuple*: ``(model, processor)`` with the model in eval mode. For ``"vit"`` and ``"vit-deep"``: a
        ``transformers.CLIPModel`` and its ``transformers.CLIPProcessor``; for ``"resnet"``: an
        ``open_clip.model.CLIP`` and a :class:`ShapesProcessor`. Both processors turn images into
        normalised ``pixel_values`` and texts into ``input_ids`` / ``attention_mask``.

    Raises:
        ImportError: for ``"resnet"`` when open_clip is not installed.

    Examples::

        >>> import captum_gradeclip as cg
        >>> from captum_gradeclip.zoo import shapes
        >>> model, processor = cg.zoo.load_shapes_clip()  # or load_shapes_clip("resnet"): a (1, 2, 4, 4) map
        >>> scene = shapes.make_scene(0, n_objects=2)
        >>> pixels = processor(images=scene.image, return_tensors="pt")["pixel_values"]
        >>> sim = cg.ImageTextSimilarity(model, scene.prompts, processor=processor)
        >>> maps = cg.GradECLIP(sim).attribute(pixels)  # (1, 2, 8, 8): one map per object
    """
    if backbone == "resnet":
        _import_open_clip()  # the extra first: a clear ImportError
        path = shapes_clip_path(backbone)
        model = load_open_clip_model(path)
        return model.to(device).eval(), _marked(ShapesProcessor.from_pretrained(path))

    from transformers import CLIPModel, CLIPProcessor

    path = shapes_clip_path(backbone)
    clip_model: torch.nn.Module = CLIPModel.from_pretrained(path, local_files_only=True)
    processor = CLIPProcessor.from_pretrained(path, local_files_only=True)
    return clip_model.to(device).eval(), _marked(processor)


def _marked(processor: Any) -> Any:
    """``processor`` with its tokenizer marked as ShapesCLIP's (``tokenizer.is_shapes_clip``), for
    :func:`captum_gradeclip.vocabulary.is_shapes_clip`'s hint about the words ShapesCLIP knows."""
    processor.tokenizer.is_shapes_clip = True
    return processor


def _import_open_clip() -> object:
    try:
        import open_clip
    except ImportError as error:
        raise ImportError(
            "the ResNet ShapesCLIP is an open_clip model: install the `openclip` extra "
            "(pip install 'captum-gradeclip[openclip]')"
        ) from error
    return open_clip


def build_open_clip_model(config: dict) -> torch.nn.Module:
    """An ``open_clip.model.CLIP`` from its keyword arguments (``embed_dim``, ``vision_cfg``, ``text_cfg``)."""
    _import_open_clip()
    from open_clip.model import CLIP

    return CLIP(**config)


def load_open_clip_model(path: str | Path) -> torch.nn.Module:
    """The open_clip model saved in ``path`` (``open_clip_config.json`` and ``model.safetensors``), in eval mode.

    The weights are stored in float16 (half the size) and loaded into the float32 model.
    """
    from safetensors.torch import load_file

    path = Path(path)
    model = build_open_clip_model(json.loads((path / OPEN_CLIP_CONFIG).read_text()))
    model.load_state_dict(load_file(path / "model.safetensors"), strict=True)  # float16 storage -> float32
    return model.eval()


def encode_images(model: Any, pixel_values: torch.Tensor) -> torch.Tensor:
    """Unnormalised image embeddings of an HF ``CLIPModel`` or an open_clip ``CLIP``."""
    if hasattr(model, "get_image_features"):
        out = model.get_image_features(pixel_values=pixel_values)
        return out if isinstance(out, torch.Tensor) else out.pooler_output
    return model.encode_image(pixel_values)


def encode_texts(model: Any, batch: dict) -> torch.Tensor:
    """Unnormalised text embeddings of a tokenised batch (``input_ids``, ``attention_mask``), for either model."""
    if hasattr(model, "get_text_features"):
        out = model.get_text_features(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        return out if isinstance(out, torch.Tensor) else out.pooler_output
    return model.encode_text(batch["input_ids"])  # causal tower, pooled at the end-of-text token (highest id)


class ShapesProcessor:
    """The ResNet ShapesCLIP's processor, called like a ``CLIPProcessor``.

    ``processor(images=..., return_tensors="pt")["pixel_values"]`` gives ``(N, 3, S, S)``: the RGB
    images scaled to [0, 1], normalised by ``image_mean`` / ``image_std`` and resized (bilinear,
    antialiased) to ``image_size`` ``S``. ``processor(text=[...], padding=True, return_tensors="pt")``
    gives ``input_ids`` and ``attention_mask`` of length ``context_length`` (open_clip's text
    tower adds a fixed-length position embedding): ``<s> words </s>`` then ``<pad>`` (id 0).
    The tokenizer is a word-level ``transformers.PreTrainedTokenizerFast`` (``processor.tokenizer``)
    whose end-of-text token has the highest id, where open_clip's ``argmax`` pooling looks for it.

    Args:
        tokenizer: the ``PreTrainedTokenizerFast``.
        image_size (int): the model's input side.
        image_mean, image_std (sequence of 3 floats): the per-channel normalisation.
        context_length (int): the text length, padded or truncated to.

    Examples::

        >>> from captum_gradeclip.zoo import ShapesProcessor
        >>> resnet_processor = ShapesProcessor(
        ...     processor.tokenizer, image_size=96, image_mean=(0.5,) * 3, image_std=(0.25,) * 3, context_length=12
        ... )
        >>> batch = resnet_processor(text=["a red circle"], images=scene.image)
        >>> batch["pixel_values"].shape, batch["input_ids"].shape  # resized; padded to context_length
        (torch.Size([1, 3, 96, 96]), torch.Size([1, 12]))
        >>> batch["attention_mask"][0].tolist()  # <s> a red circle </s>, then padding
        [1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0]
    """

    def __init__(
        self,
        tokenizer: Any,  # a transformers tokenizer
        image_size: int,
        image_mean: tuple[float, ...],
        image_std: tuple[float, ...],
        context_length: int,
    ) -> None:
        self.tokenizer = tokenizer
        self.image_size = int(image_size)
        self.image_mean = tuple(float(m) for m in image_mean)
        self.image_std = tuple(float(s) for s in image_std)
        self.context_length = int(context_length)

    def __repr__(self) -> str:
        return (
            f"ShapesProcessor(image_size={self.image_size}, image_mean={self.image_mean}, "
            f"image_std={self.image_std}, context_length={self.context_length})"
        )

    def pixels(self, arrays: np.ndarray) -> torch.Tensor:
        """``(N, H, W, 3)`` uint8 arrays of one size -> ``(N, 3, S, S)`` normalised, resized pixel values."""
        return self.pixel_values(torch.from_numpy(np.array(arrays, copy=True)).permute(0, 3, 1, 2))  # a writable copy

    def pixel_values(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` uint8 images -> ``(N, 3, S, S)`` normalised, resized pixel values, on their device."""
        x = images.float() / 255.0
        mean = torch.tensor(self.image_mean, device=x.device).view(1, 3, 1, 1)
        x = (x - mean) / torch.tensor(self.image_std, device=x.device).view(1, 3, 1, 1)
        if tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size,) * 2, mode="bilinear", align_corners=False, antialias=True)
        return x

    def __call__(
        self,
        text: str | Sequence[str] | None = None,
        images: object = None,
        return_tensors: str | None = "pt",
        **kwargs: object,
    ) -> BatchEncoding:
        """Tokenises ``text`` and/or prepares ``images``; returns a ``transformers.BatchEncoding``.

        ``padding``, ``truncation`` and ``max_length`` are accepted for compatibility with
        ``CLIPProcessor`` calls; texts are always padded and truncated to ``context_length``.
        """
        from transformers import BatchEncoding

        if text is None and images is None:
            raise ValueError("give `text`, `images` or both")
        if return_tensors not in ("pt", None):
            raise ValueError(f"ShapesProcessor returns PyTorch tensors (return_tensors='pt'); got {return_tensors!r}")
        data: dict = {}
        if text is not None:
            texts = [text] if isinstance(text, str) else list(text)
            batch = self.tokenizer(
                texts, padding="max_length", truncation=True, max_length=self.context_length, return_tensors="pt"
            )
            data.update(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        if images is not None:
            items = images if isinstance(images, list | tuple) else [images]
            data["pixel_values"] = torch.cat([self.pixels(_rgb(item)[None]) for item in items])
        return BatchEncoding(data)

    def save_pretrained(self, path: str | Path) -> None:
        """Writes ``processor_config.json`` and the tokenizer files to ``path``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(path)
        config = {
            "processor_class": type(self).__name__,
            "image_size": self.image_size,
            "image_mean": list(self.image_mean),
            "image_std": list(self.image_std),
            "context_length": self.context_length,
        }
        (path / "processor_config.json").write_text(json.dumps(config, indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, path: str | Path) -> ShapesProcessor:
        """The processor saved in ``path`` by :meth:`save_pretrained` (local files only)."""
        from transformers import PreTrainedTokenizerFast

        path = Path(path)
        config = json.loads((path / "processor_config.json").read_text())
        tokenizer = PreTrainedTokenizerFast.from_pretrained(path, local_files_only=True)
        return cls(
            tokenizer,
            image_size=config["image_size"],
            image_mean=config["image_mean"],
            image_std=config["image_std"],
            context_length=config["context_length"],
        )


def _rgb(image: object) -> np.ndarray:
    """A PIL image, or an ``(H, W, 3)`` uint8 array, as an ``(H, W, 3)`` uint8 array."""
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image arrays must be (H, W, 3) uint8; got {image.shape} {image.dtype}")
        return image
    if not hasattr(image, "convert"):
        raise TypeError(f"images must be PIL images or (H, W, 3) uint8 arrays; got {type(image).__name__}")
    return np.array(image.convert("RGB"))  # a writable copy
