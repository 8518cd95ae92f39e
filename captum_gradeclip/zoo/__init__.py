"""The embedded ShapesCLIP model and the shapes world it was trained on.

- :mod:`~captum_gradeclip.zoo.shapes`: the seeded scene generator (images, captions, masks, boxes);
- :func:`load_shapes_clip`: the trained model and its processor, offline (``"vit"``: an HF
  ``CLIPModel``; ``"resnet"``: an open_clip ``CLIP`` with a ``ModifiedResNet`` and a
  :class:`ShapesProcessor`);
- :mod:`~captum_gradeclip.zoo.shapes_batch`: the scenes rendered in batches with torch (the trainer's data).

The trainer (``python -m tools.train_shapes``) and its quality script (``tools/shapes_quality.py``: held-out
zero-shot, retrieval, binding and pointing game) build the shipped weights; they live in the repository's
``tools/``, not in the installed package.
"""

from captum_gradeclip.zoo import shapes
from captum_gradeclip.zoo.shapes_clip import (
    BACKBONES,
    MODEL_SPECS,
    ShapesProcessor,
    load_shapes_clip,
    shapes_clip_path,
    training_info,
)

__all__ = [
    "BACKBONES",
    "MODEL_SPECS",
    "ShapesProcessor",
    "load_shapes_clip",
    "shapes",
    "shapes_clip_path",
    "training_info",
]
