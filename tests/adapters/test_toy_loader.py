"""A new loader is one adapter file: a scratch copy of the tree gets one new adapter module (with the processing
role and a spec prefix) and its test, and that test, the loading tests and the adapter discovery tests pass with
nothing else edited."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

TOY_ADAPTER = '''
"""A toy loader: a CLIPModel inside a wrapper, its own squashing preprocess, and the spec ``toy:NAME``."""

from __future__ import annotations

import torch
from PIL import Image
from torch import Tensor, nn

from captum_gradeclip.adapters.geometry import Geometry
from captum_gradeclip.adapters.hf_clip import HFCLIPAdapter
from captum_gradeclip.adapters.processing import Processing


class ToyCLIP(nn.Module):
    def __init__(self, clip: nn.Module) -> None:
        super().__init__()
        self.clip = clip


class ToyProcessing(Processing):
    def __init__(self, tokenizer: object, side: int, context: int) -> None:
        self.processor, self.tokenizer, self.side, self.max_tokens = tokenizer, tokenizer, side, context
        self.mean, self.std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)

    def pixels(self, images: object) -> Tensor:
        items = images if isinstance(images, list) else [images]
        arrays = [torch.tensor(list(i.convert("RGB").resize((self.side, self.side), Image.BILINEAR).getdata()))
                  for i in items]
        x = torch.stack([a.float().T.reshape(3, self.side, self.side) / 255 for a in arrays])
        return (x - 0.5) / 0.25

    def tokenize(self, texts):
        batch = self.tokenizer(list(texts), padding="max_length", max_length=self.max_tokens, truncation=True,
                               return_tensors="pt")
        return batch["input_ids"], batch["attention_mask"]

    def tokens(self, ids: Tensor) -> list[str]:
        return self.tokenizer.convert_ids_to_tokens(ids.tolist())

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text)["input_ids"])

    def geometry(self, size):
        return Geometry(tuple(size), (self.side, self.side), (0, 0), (self.side, self.side))


class ToyAdapter(HFCLIPAdapter):
    loader_name = "toy CLIP"
    spec_prefixes = ("toy",)

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model.clip)

    @classmethod
    def matches(cls, model: object) -> bool:
        return isinstance(model, ToyCLIP)

    @classmethod
    def load_spec(cls, name, spec, *, allow_missing_weights=False):
        from captum_gradeclip.zoo import load_shapes_clip

        clip, processor = load_shapes_clip()
        return ToyCLIP(clip).eval(), processor.tokenizer

    def processing(self, processor, tokenizer=None):
        return ToyProcessing(tokenizer or processor, 64, self.text_context_length())
'''

TOY_TEST = """
import torch
from PIL import Image

import captum_gradeclip as cg
from captum_gradeclip.adapters import ADAPTERS


def test_the_toy_loader_is_found_loaded_and_processes_its_inputs():
    assert "ToyAdapter" in [a.__name__ for a in ADAPTERS]
    loaded = cg.load("toy:tiny")
    assert type(loaded.adapter).__name__ == "ToyAdapter"
    photo = Image.new("RGB", (160, 90), (255, 0, 0))
    pixels = loaded.pixels(photo)
    assert pixels.shape == (1, 3, 64, 64)
    assert abs(float(loaded.seen_image(pixels)[..., 0].mean()) - 1.0) < 1e-6
    alone, _ = loaded.tokenize(["a red circle"])
    beside, mask = loaded.tokenize(["a red circle", "a blue square and a green cross"])
    assert torch.equal(alone[0], beside[0])
    sim = cg.ImageTextSimilarity(loaded.model, text_embeds=loaded.adapter.embed_texts(beside, mask).detach())
    maps = cg.GradECLIP(sim).attribute(pixels, target=0)
    heat = loaded.to_original(maps, photo)
    assert heat.shape == (1, 1, 90, 160) and not heat.isnan().any()
    assert [w for w, _ in loaded.processing.words(beside[0][mask[0].bool()], torch.ones(5))] == ["a", "red", "circle"]
"""


def test_a_new_adapter_file_is_a_new_loader_with_nothing_else_edited(tmp_path):
    scratch = tmp_path / "tree"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    for name in ("captum_gradeclip", "tests", "benchmarks", "tools"):
        shutil.copytree(ROOT / name, scratch / name, ignore=ignore)
    for name in ("conftest.py", "pyproject.toml", "setup.cfg", "ruff.toml"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, scratch / name)
    (scratch / "captum_gradeclip" / "adapters" / "toy.py").write_text(textwrap.dedent(TOY_ADAPTER))
    (scratch / "tests" / "adapters" / "test_toy.py").write_text(textwrap.dedent(TOY_TEST))
    env = {**os.environ, "PYTHONPATH": str(scratch)}
    tests = ["tests/adapters/test_toy.py", "tests/test_loading.py", "tests/adapters/test_init.py"]
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
        cwd=scratch,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "passed" in run.stdout and "failed" not in run.stdout
