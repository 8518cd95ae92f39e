"""A new method is its file and its test: in a scratch copy of the tree, one new module under ``baselines/`` (and
its test) is listed by the registry, run through the baselines' contract tests, named by the CLI's help and the
docs' tables once they are regenerated, with no other file edited by hand."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TOY_METHOD = '''"""A toy baseline: each token's value norm in the last block."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from captum_gradeclip.attr.base import SimilarityAttribution
from captum_gradeclip.wrappers import ExplainContext, SimilarityWrapper


class ToyValueNorm(SimilarityAttribution):
    """Each token's value norm in the explained block (one forward)."""

    method_name = "Toy value norm"
    listing_order = 100

    def __init__(self, forward_func: SimilarityWrapper, layer: nn.Module | None = None) -> None:
        super().__init__(forward_func)
        self.block = self._pick_blocks(layer, 1, None)[0]

    def _maps(self, inputs: Tensor, extra: tuple, columns: Tensor, ctx: ExplainContext) -> Tensor:
        with torch.no_grad(), self._probe(self.block, lambda record, o: o) as record:
            self.similarity(inputs, *extra)
        norms = record.v.norm(dim=-1)  # (N, T)
        return norms[:, None].expand(-1, columns.shape[0], -1)
'''

TOY_TEST = '''"""ToyValueNorm: listed by the registry under its declared name; maps are the value norms."""

import torch

import captum_gradeclip as cg
from captum_gradeclip import methods
from captum_gradeclip.baselines.toy_value_norm import ToyValueNorm
from tests.conftest import make_clip


def test_listed_last_with_its_name_and_exported():
    assert methods.available()[-1].cls is ToyValueNorm and methods.get("Toy value norm").cls is ToyValueNorm
    assert cg.baselines.ToyValueNorm is ToyValueNorm and ToyValueNorm.get_name() == "Toy value norm"


def test_maps_are_positive_on_the_patch_grid():
    sim = cg.ImageTextSimilarity(make_clip(), text_embeds=torch.randn(2, 16))
    maps = methods.get("Toy value norm").build(sim).attribute(torch.randn(1, 3, 32, 32), target=1)
    assert maps.shape == (1, 1, 4, 4) and bool((maps > 0).all())
'''

#: The generated files the regeneration may change (and nothing else is edited).
GENERATED = {"README.md", "docs/models.md", "captum_gradeclip/cli/commands.py"}


def _run(tree: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([sys.executable, *args], cwd=tree, env=env, capture_output=True, text=True, timeout=600)


def _files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and not {".git", "__pycache__", ".pytest_cache"} & set(p.relative_to(root).parts)
    }


#: What the scratch tree holds: the project's sources, not what a checkout has built or installed beside them (a
#: virtual environment, the built docs), which would be copied and read into memory for nothing.
SOURCES = ("captum_gradeclip", "tests", "tools", "benchmarks", "docs")
TOP_FILES = ("README.md", "setup.cfg", "pyproject.toml", "ruff.toml", "conftest.py")
BUILT = shutil.ignore_patterns(
    ".git", "__pycache__", ".pytest_cache", "*.egg-info", "_build", "_generated", "jupyter_execute",
    "tutorial_notebooks",
)  # fmt: skip


def _copy_sources(tree: Path) -> None:
    for name in SOURCES:
        shutil.copytree(ROOT / name, tree / name, ignore=BUILT)
    for name in TOP_FILES:
        shutil.copy(ROOT / name, tree / name)


def test_a_new_method_file_and_its_test_are_all_it_takes(tmp_path):
    tree = tmp_path / "tree"
    _copy_sources(tree)
    before = _files(tree)
    (tree / "captum_gradeclip" / "baselines" / "toy_value_norm.py").write_text(TOY_METHOD)
    (tree / "tests" / "baselines" / "test_toy_value_norm.py").write_text(TOY_TEST)

    stale = _run(tree, "-m", "tools.generate_method_tables")
    assert stale.returncode == 1 and "stale: README.md" in stale.stdout, stale.stdout + stale.stderr
    assert _run(tree, "-m", "tools.generate_method_tables", "--write").returncode == 0
    readme = (tree / "README.md").read_text()
    assert "| Toy value norm | `cg.baselines.ToyValueNorm` | yes | yes | yes |" in readme
    assert "Toy value norm" in (tree / "captum_gradeclip" / "cli" / "commands.py").read_text()

    tests = _run(
        tree, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
        "tests/baselines/test_toy_value_norm.py",
        "tests/baselines/test_common.py::test_shapes_tuples_and_untouched_model[ToyValueNorm]",
        "tests/baselines/test_common.py::test_exception_inside_the_forward_leaves_model_unchanged[ToyValueNorm]",
        "tests/test_docs_methods.py",
        "tests/test_explain_methods.py::test_the_static_help_names_every_registered_method",
        "tests/test_imports.py::test_no_method_module_imports_the_registry",
    )  # fmt: skip
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-2000:]
    assert " passed" in tests.stdout and "deselected" not in tests.stdout

    changed = {path for path, data in _files(tree).items() if before.get(path) != data}
    new = {"captum_gradeclip/baselines/toy_value_norm.py", "tests/baselines/test_toy_value_norm.py"}
    assert changed - GENERATED == new, "files edited beyond the method, its test and the generated ones"
