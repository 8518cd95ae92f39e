"""The trained ShapesCLIP for the application tests: the shipped weights, or a development copy.

Until the shipped weights are in the package, point ``CAPTUM_GRADECLIP_SHAPES_DIR`` at a trained
``from_pretrained`` directory; without either, the tests fail with that message (they never skip).
"""

from __future__ import annotations

import os

import pytest
from transformers.utils import logging as hf_logging

import captum_gradeclip as cg

ENV = "CAPTUM_GRADECLIP_SHAPES_DIR"


def load_trained_shapes_clip() -> tuple:
    try:
        cg.zoo.shapes_clip_path()
    except FileNotFoundError:
        path = os.environ.get(ENV)
        if not path:
            raise RuntimeError(
                f"no shipped ShapesCLIP weights; set {ENV} to a trained from_pretrained directory"
            ) from None
        from transformers import CLIPModel, CLIPProcessor

        hf_logging.set_verbosity_error()
        return CLIPModel.from_pretrained(path).eval(), CLIPProcessor.from_pretrained(path)
    return cg.zoo.load_shapes_clip()


@pytest.fixture(scope="session")
def shapes_clip() -> tuple:
    return load_trained_shapes_clip()
