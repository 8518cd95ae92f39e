"""ShapesCLIP: a small CLIP trained by this project on the shapes world, shipped inside the package.

It loads fully offline through transformers' own classes: the package holds a
``from_pretrained`` directory (``config.json``, ``model.safetensors``, the processor with its
word-level tokenizer, and ``training.json`` with the training settings and measured quality).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import torch

#: Backbones and the package directory that holds each one's weights.
BACKBONES: dict[str, str] = {"vit": "shapes_clip_vit"}


def shapes_clip_path(backbone: str = "vit") -> Path:
    """The directory of the shipped ``backbone``, loadable with ``CLIPModel.from_pretrained``.

    Raises:
        ValueError: if ``backbone`` is unknown.
        FileNotFoundError: if the package was installed without its weights.
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
    """The settings, training time and held-out quality recorded when the shipped weights were trained."""
    return json.loads((shapes_clip_path(backbone) / "training.json").read_text())


def load_shapes_clip(backbone: str = "vit", device: str | torch.device = "cpu") -> tuple[torch.nn.Module, object]:
    """Loads the embedded ShapesCLIP, offline.

    Args:
        backbone (str, optional): ``"vit"``, an HF ``CLIPModel`` (ViT, 64x64 input, patch 8).
            Default: ``"vit"``.
        device (str or torch.device, optional): where to put the model. Default: ``"cpu"``.

    Returns:
        *tuple*: ``(model, processor)``: a ``transformers.CLIPModel`` in eval mode and its
        ``transformers.CLIPProcessor``, which turns images into normalised ``pixel_values`` and
        texts into ``input_ids`` / ``attention_mask``.

    Examples::

        >>> import captum_gradeclip as cg
        >>> from captum_gradeclip.zoo import shapes
        >>> model, processor = cg.zoo.load_shapes_clip()
        >>> scene = shapes.make_scene(0, n_objects=2)
        >>> pixels = processor(images=scene.image, return_tensors="pt")["pixel_values"]
        >>> sim = cg.ImageTextSimilarity(model, scene.prompts, processor=processor)
        >>> maps = cg.GradECLIP(sim).attribute(pixels)  # (1, 2, 8, 8): one map per object
    """
    from transformers import CLIPModel, CLIPProcessor

    path = shapes_clip_path(backbone)
    model = CLIPModel.from_pretrained(path, local_files_only=True)
    processor = CLIPProcessor.from_pretrained(path, local_files_only=True)
    return model.to(device).eval(), processor
