"""tools/known_mutants.py, the hand-picked mutants: every one can still be planted, and the table says what happened."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "tools" / "known_mutants.py"


@pytest.fixture(scope="module")
def module():
    return runpy.run_path(str(SCRIPT))


def test_every_mutant_replaces_text_found_once_and_names_existing_tests(module):
    # a change to the code a mutant sits in makes it stale: update the mutant in tools/known_mutants.py
    mutants = module["MUTANTS"]
    assert len({m.name for m in mutants}) == len(mutants)
    stale = {m.name: module["check"](m) for m in mutants if module["check"](m) is not None}
    assert not stale
    assert all(m.old != m.new and m.tests for m in mutants)
    seven = {"pointing-yx-swap", "infidelity-plus", "rise-no-p", "rise-draw-offset", "text-mask-ignored"}
    assert seven | {"m2ib-minimise", "m2ib-column-0"} <= {m.name for m in mutants}


def test_select_takes_names_and_patterns_and_refuses_unknown_ones(module):
    assert [m.name for m in module["select"](["m2ib-*"])] == ["m2ib-minimise", "m2ib-column-0", "m2ib-capacity-sign"]
    assert len(module["select"]([])) == len(module["MUTANTS"])
    with pytest.raises(SystemExit, match="no-such"):
        module["select"](["no-such"])


def test_check_reports_text_that_is_missing_or_repeated(module, tmp_path):
    mutant = module["Mutant"]
    (tmp_path / "captum_gradeclip").mkdir()
    (tmp_path / "captum_gradeclip" / "f.py").write_text("a = 1\na = 1\nb = 2\n")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_f.py").write_text("")
    assert module["check"](mutant("x", "f.py", "b = 2", "b = 3", ("tests/test_f.py",), ""), tmp_path) is None
    assert "2 times" in module["check"](mutant("x", "f.py", "a = 1", "a = 2", ("tests/test_f.py",), ""), tmp_path)
    assert "0 times" in module["check"](mutant("x", "f.py", "c = 1", "c = 2", ("tests/test_f.py",), ""), tmp_path)
    assert "missing tests" in module["check"](mutant("x", "f.py", "b = 2", "b = 3", ("tests/nope.py",), ""), tmp_path)


def test_table_counts_caught_and_marks_survivors(module):
    m = module["MUTANTS"]
    result = module["Result"]
    text = module["table"](
        [result(m[0], "caught", "tests/metrics/test_pointing.py::test_x", 1.25), result(m[1], "survived", "", 2.0)]
    )
    lines = text.splitlines()
    assert lines[2].startswith(f"| `{m[0].name}` |") and "| yes | metrics/test_pointing.py::test_x | 1.2 |" in lines[2]
    assert "| **no** |" in lines[3]
    assert lines[-1] == "1 of 2 mutants caught."


def test_a_partial_rerun_updates_its_own_rows_and_keeps_the_others(module):
    m = module["MUTANTS"]
    result = module["Result"]
    first = module["table"]([result(m[0], "survived", "", 1.0), result(m[2], "caught", "tests/a.py::t", 2.0)])
    # m[1] is new; m[2] is rerun and now survives; m[0] keeps its row; rows follow the list's order
    text = module["table"]([result(m[2], "survived", "", 3.0), result(m[1], "caught", "tests/b.py::u", 4.0)], first)
    lines = text.splitlines()
    assert [line.split("`")[1] for line in lines[2:5]] == [m[0].name, m[1].name, m[2].name]
    assert lines[2] == first.splitlines()[2]
    assert "| **no** |" in lines[4] and "| 3.0 |" in lines[4]
    assert lines[-1] == "1 of 3 mutants caught."
