"""The docs' lists of methods agree with the registry, :mod:`captum_gradeclip.methods`.

README's method table lists exactly the registered methods, in their order, with their class, sides and whether
they run on an attention pool; docs/models.md's per-loader table and README's ``cg.baselines`` list name every
registered method and nothing else. A method registered (or removed) without the docs fails here, naming it.
"""

from __future__ import annotations

import re
from pathlib import Path

import captum_gradeclip as cg
from captum_gradeclip import methods

ROOT = Path(__file__).parents[1]


def _section(text: str, heading: str) -> str:
    start = text.index(f"\n{heading}\n")
    end = text.find("\n## ", start + len(heading) + 2)
    return text[start : end if end >= 0 else None]


def _rows(section: str) -> list[list[str]]:
    lines = [line for line in section.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]  # after header, rule


def _family(name: str) -> str:
    """A method's name without its variant: ``"Grad-ECLIP (paper)"`` -> ``"grad-eclip"``."""
    return name.split(" (")[0].lower()


def test_readme_method_table_is_the_registry():
    rows = _rows(_section((ROOT / "README.md").read_text(), "## Methods"))
    registered = methods.available()
    assert [row[0] for row in rows] == [m.name for m in registered], "README's ## Methods table vs the registry"
    for row, method in zip(rows, registered, strict=True):
        name, cls, image, text, pool = row
        path = re.fullmatch(r"`(cg(?:\.baselines)?\.\w+)(?:\((.*)\))?`", cls)
        assert path is not None, f"{name}: class cell {cls!r}"
        obj = cg
        for part in path.group(1).split(".")[1:]:
            obj = getattr(obj, part)
        assert obj is method.cls, f"{name}: {path.group(1)} is not {method.cls.__name__}"
        options = dict(re.findall(r'(\w+)="(\w+)"', path.group(2) or ""))
        assert options == dict(method.kwargs), f"{name}: fixed arguments {options} vs {dict(method.kwargs)}"
        assert (image, text) == tuple("yes" if side in method.modalities else "no" for side in ("image", "text")), name
        assert pool.startswith("no") == method.needs_self_attention, f"{name}: attention-pool column {pool!r}"


def test_models_page_per_loader_table_names_every_method_once():
    section = _section((ROOT / "docs" / "models.md").read_text(), "## Baselines per loader")
    header = next(line for line in section.splitlines() if line.startswith("|"))
    named = [name.strip().lower() for cell in header.strip("|").split("|")[1:] for name in cell.split(",")]
    assert sorted(named) == sorted({_family(m.name) for m in methods.available()})


def test_readme_baselines_list_names_the_registered_baseline_classes():
    text = (ROOT / "README.md").read_text()
    bullet = text[text.index("- `cg.baselines`: ") : text.index("Every one runs on every CLIP loader")]
    listed = re.findall(r"`(\w+)`", bullet.split(":", 1)[1])
    shipped = {m.cls.__name__ for m in methods.available() if m.cls.__module__.startswith("captum_gradeclip.baselines")}
    assert sorted(listed) == sorted(shipped)
    assert all(getattr(cg.baselines, name) for name in listed)
