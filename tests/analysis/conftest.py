"""The trained ShapesCLIP fixture, shared with the fine-tuning tests."""

from __future__ import annotations

import pytest

from tests.finetune.conftest import load_trained_shapes_clip


@pytest.fixture(scope="session")
def shapes_clip() -> tuple:
    return load_trained_shapes_clip()
