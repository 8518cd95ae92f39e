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
from tools import generate_method_tables

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


def test_readme_baselines_bullet_points_at_the_table_and_names_no_unregistered_class():
    text = (ROOT / "README.md").read_text()
    bullet = text[text.index("- `cg.baselines`: ") : text.index("\n- ", text.index("- `cg.baselines`: ") + 1)]
    assert "the baselines of the `## Methods` table" in bullet  # no hand list to keep up to date
    registered = {m.cls.__name__ for m in methods.available()}
    named = [name for name in re.findall(r"`(\w+)`", bullet) if hasattr(cg.baselines, name)]
    assert set(named) <= registered, "the bullet names a class the registry does not list"


def test_the_generated_tables_and_help_are_current():
    # README's ## Methods table, docs/models.md's per-loader table and the CLI's METHOD_HELP
    assert generate_method_tables.stale() == {}, "run: python -m tools.generate_method_tables --write"


def test_a_stale_file_is_named_and_rewriting_it_makes_it_current(tmp_path):
    for path in generate_method_tables.TARGETS:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text((ROOT / path).read_text())
    readme = tmp_path / "README.md"
    readme.write_text(readme.read_text().replace("| RISE |", "| RISE2 |", 1))  # a hand edit of the table
    commands = tmp_path / "captum_gradeclip" / "cli" / "commands.py"
    commands.write_text(commands.read_text().replace(", M2IB", "", 1))  # a method missing from the help
    stale = generate_method_tables.stale(tmp_path)
    assert sorted(stale) == ["README.md", "captum_gradeclip/cli/commands.py"]
    for path, text in stale.items():
        (tmp_path / path).write_text(text)
    assert generate_method_tables.stale(tmp_path) == {}
    assert (tmp_path / "README.md").read_text() == (ROOT / "README.md").read_text()


def test_the_per_loader_columns_follow_the_declared_requirements():
    listed = methods.available()
    table = generate_method_tables.models_table(listed)
    header = [cell.strip() for cell in table.splitlines()[0].strip("|").split("|")][1:]
    resnet = [cell.strip() for cell in table.splitlines()[3].strip("|").split("|")][1:]
    for column, cell in zip(header, resnet, strict=True):
        names = [name.strip().lower() for name in column.split(",")]
        members = [m for m in listed if _family(m.name) in names]
        assert members, column
        assert {generate_method_tables.note(m, "resnet") for m in members} == {cell}, column
        for m in members:  # where no note of the class says otherwise, the requirement decides
            if "resnet" not in m.cls.loader_notes:
                assert cell.startswith("no") == m.needs_self_attention, m.name
