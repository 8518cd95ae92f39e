"""Every fenced Python block of README.md and docs/*.md runs as written.

Each block runs on its own, in a fresh namespace and a temporary working directory, so it has to be
self-contained: its imports, the model (ShapesCLIP, offline), an image and texts in the model's vocabulary.

An HTML comment on the line before a block's opening fence changes how it is treated:

- ``<!-- real-clip -->``: the same code on a real CLIP from the model hub, which CI cannot reach. It is not run;
  it mirrors the nearest block before it that is run, in the same shape: the two may differ only in a leading
  part made of imports and assignments (the model, the processor, the image, the texts); every line after it is
  identical, and the names those lines use are set up in both.
- ``<!-- continues -->``: runs after the block before it in the same file, in that block's namespace (for a short
  follow-up that reuses its names, e.g. a second method on the same ``sim`` and ``pixel_values``).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARKERS = ("real-clip", "continues")
_MARKER = re.compile(r"^<!--\s*([\w-]+)\s*-->$")
_FENCE = re.compile(r"^(`{3,})\s*(\S*)")


@dataclass
class Block:
    """One fenced code block."""

    page: str
    line: int  #: of the opening fence, from 1
    language: str
    code: str
    marker: str | None

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def blocks(text: str, page: str = "page.md") -> list[Block]:
    """The fenced code blocks of a Markdown text, with the marker comment before each (if any)."""
    lines = text.splitlines()
    found, i = [], 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        start = i
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == fence.group(1)), None)
        if end is None:
            raise ValueError(f"{page}:{start + 1}: a code fence that is never closed")
        before = lines[start - 1].strip() if start > 0 else ""
        marker = _MARKER.match(before)
        found.append(
            Block(page, start + 1, fence.group(2), "\n".join(lines[start + 1 : end]) + "\n", marker and marker[1])
        )
        i = end + 1
    return found


def python_blocks() -> list[Block]:
    return [b for page in PAGES for b in blocks(page.read_text(), page.name) if b.language == "python"]


def _split(code: list[str], common: int, block: Block) -> tuple[ast.Module, ast.Module] | None:
    try:
        return (
            ast.parse("\n".join(code[: len(code) - common]), filename=block.id),
            ast.parse("\n".join(code[len(code) - common :]), filename=block.id),
        )
    except SyntaxError:
        return None


def check_same_shape(run: Block, variant: Block) -> None:
    """Raises AssertionError unless ``variant`` is ``run`` with only its leading setup changed.

    The two share their last lines (at least one statement); before them, each holds only imports and assignments,
    and every name that the shared lines use and the run block sets up, the variant sets up too.
    """
    ours, theirs = run.code.splitlines(), variant.code.splitlines()
    common = 0
    while common < min(len(ours), len(theirs)) and ours[-1 - common] == theirs[-1 - common]:
        common += 1
    while common and (_split(ours, common, run) is None or _split(theirs, common, variant) is None):
        common -= 1  # the shared lines start inside a statement: start them at the next one
    split = _split(ours, common, run) if common else None
    assert split and split[1].body, (
        f"{variant.id}: shares no code with {run.id}; a real-CLIP variant changes only the setup at the top"
    )
    shared = split[1]

    def setup_names(block: Block, prefix: ast.Module) -> set[str]:
        names = set()
        for statement in prefix.body:
            assert isinstance(statement, ast.Import | ast.ImportFrom | ast.Assign), (
                f"{block.id}, line {statement.lineno}: the part that differs from {run.id} may hold only "
                f"imports and assignments; got {type(statement).__name__}"
            )
            if isinstance(statement, ast.Assign):
                names |= {n.id for t in statement.targets for n in ast.walk(t) if isinstance(n, ast.Name)}
            else:
                names |= {(a.asname or a.name).split(".")[0] for a in statement.names}
        return names

    used = {n.id for n in ast.walk(shared) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    ours_setup = setup_names(run, split[0]) & used
    theirs_setup = setup_names(variant, _split(theirs, common, variant)[0]) & used  # type: ignore[index]
    assert ours_setup <= theirs_setup, (
        f"{variant.id} does not set up {sorted(ours_setup - theirs_setup)}, which the code it shares with {run.id} uses"
    )


ALL = python_blocks()
RUN = [b for b in ALL if b.marker != "real-clip"]


def test_there_are_blocks_and_every_marker_is_known():
    assert len(RUN) >= 10, [b.id for b in RUN]
    unknown = [(b.id, b.marker) for b in ALL if b.marker is not None and b.marker not in MARKERS]
    assert not unknown, f"unknown markers (known: {MARKERS}): {unknown}"


@pytest.mark.parametrize("variant", [b for b in ALL if b.marker == "real-clip"], ids=lambda b: b.id)
def test_real_clip_variant_has_the_shape_of_the_block_before_it(variant):
    before = [b for b in RUN if b.page == variant.page and b.line < variant.line]
    assert before, f"{variant.id} must come after the block it mirrors"
    check_same_shape(before[-1], variant)


def _namespace_chain(block: Block) -> list[Block]:
    chain = [block]
    while chain[0].marker == "continues":
        before = [b for b in RUN if b.page == block.page and b.line < chain[0].line]
        assert before, f"{block.id} continues a block, but none runs before it"
        chain.insert(0, before[-1])
    return chain


@pytest.mark.parametrize("block", RUN, ids=lambda b: b.id)
def test_block_runs_as_written(block, tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__snippet__"}
    try:
        for part in _namespace_chain(block):
            exec(compile(part.code, part.id, "exec"), namespace)
    except ImportError as error:
        if "openclip" in str(error) or getattr(error, "name", None) in ("open_clip", "clip"):
            pytest.skip(f"{block.id} needs a loader extra, pip install -e '.[openclip,openai]': {error}")
        raise
    finally:
        plt.close("all")


def test_parser_reads_markers_and_fences():
    text = "x\n<!-- real-clip -->\n```python\na = 1\n```\n\n````md\n```python\nnot a block\n```\n````\n"
    found = blocks(text)
    assert [(b.line, b.language, b.marker) for b in found] == [(3, "python", "real-clip"), (7, "md", None)]
    assert found[0].code == "a = 1\n"
    with pytest.raises(ValueError, match="never closed"):
        blocks("```python\na = 1\n")


def test_shape_check_accepts_a_new_setup_and_rejects_changed_code():
    run = Block("p", 1, "python", "import a\nmodel = a.load()\ntexts = ['x']\nmaps = f(model, texts)\n", None)
    same = Block("p", 9, "python", "import b\nmodel = b.hub('m')\ntexts = ['dog']\nmaps = f(model, texts)\n", None)
    check_same_shape(run, same)
    other = Block("p", 9, "python", "import b\nmodel = b.hub('m')\ntexts = ['dog']\nmaps = g(model, texts)\n", None)
    with pytest.raises(AssertionError, match="shares no code"):
        check_same_shape(run, other)
    extra = Block(
        "p", 9, "python", "import b\nmodel = b.hub('m')\nprint(1)\ntexts = ['x']\nmaps = f(model, texts)\n", None
    )
    with pytest.raises(AssertionError, match="only imports and assignments"):
        check_same_shape(run, extra)
    names = Block("p", 9, "python", "import b\nnet = b.hub('m')\ntexts = ['x']\nmaps = f(model, texts)\n", None)
    with pytest.raises(AssertionError, match=r"does not set up \['model'\]"):
        check_same_shape(run, names)
