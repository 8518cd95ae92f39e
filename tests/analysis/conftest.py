"""The shipped ShapesCLIP fixture, shared with the fine-tuning tests."""

from tests.finetune.conftest import shapes_clip  # noqa: F401  (a pytest fixture, used by name)
