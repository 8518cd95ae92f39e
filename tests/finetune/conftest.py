"""The shipped ShapesCLIP for the application tests, and held-out scenes with their object masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import captum_gradeclip as cg
from captum_gradeclip.zoo import shapes


@pytest.fixture(scope="session")
def shapes_clip() -> tuple:
    return cg.zoo.load_shapes_clip()


def object_regions(processor: object, first_seed: int, n: int, n_objects: int) -> tuple:
    """``n`` scenes from ``first_seed``: pixel values, object masks ``(n, 3, 64, 64)`` and each object's prompt
    index among all colour x shape prompts ``(n, n_objects)``."""
    prompts = shapes.all_prompts()
    scenes = [shapes.make_scene(first_seed + i, n_objects=n_objects) for i in range(n)]
    x = processor(images=[s.image for s in scenes], return_tensors="pt")["pixel_values"]  # type: ignore[operator]
    masks = torch.from_numpy(np.stack([s.masks for s in scenes]))
    labels = torch.tensor([[prompts.index(p) for p in s.prompts] for s in scenes])
    return x, masks, labels
