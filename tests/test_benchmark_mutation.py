"""tools/mutation.py: the configured modules exist, mutmut's names are built right, and the page adds up."""

from __future__ import annotations

import configparser
import fnmatch
import json
import re
from pathlib import Path

import pytest

from tools import mutation
from tools.mutation import EQUIVALENT, MODULES, Module, Outcome

ROOT = Path(__file__).parents[1]


def test_every_module_names_functions_that_exist_and_is_in_setup_cfg():
    config = configparser.ConfigParser(interpolation=None)
    config.read(ROOT / "setup.cfg")
    only = config.get("mutmut", "only_mutate").split()
    selection = config.get("mutmut", "pytest_add_cli_args_test_selection").split()
    assert len({m.name for m in MODULES}) == len(MODULES)
    for module in MODULES:
        source = (ROOT / "captum_gradeclip" / module.path).read_text()
        for function in module.functions:
            *cls, name = function.split(".")
            assert re.search(rf"^\s*def {name}\(", source, re.M), f"{module.name}: no function {function}"
            if cls:
                assert re.search(rf"^class {cls[0]}\b", source, re.M), f"{module.name}: no class {cls[0]}"
        assert f"captum_gradeclip/{module.path}" in only
        files = {t.split("::")[0] for t in module.tests}  # a test file, or one test's id in it
        assert files <= set(selection), f"{module.name}: tests missing from setup.cfg's selection"
        assert all((ROOT / f).is_file() for f in files), f"{module.name}: a test file does not exist"
        for file, _, test in (t.partition("::") for t in module.tests if "::" in t):
            assert re.search(rf"^def {test}\(", (ROOT / file).read_text(), re.M), f"{module.name}: no test {test}"


def test_globs_match_mutmuts_names_of_functions_and_methods_only():
    module = Module("m", "runs/store.py", ("check_store", "Scan.run"), ("tests/t.py",), "")
    globs = module.globs()
    assert globs == [
        "captum_gradeclip.runs.store.x_check_store__mutmut_*",
        "captum_gradeclip.runs.store.xǁScanǁrun__mutmut_*",
    ]
    assert fnmatch.fnmatchcase("captum_gradeclip.runs.store.x_check_store__mutmut_12", globs[0])
    assert fnmatch.fnmatchcase("captum_gradeclip.runs.store.xǁScanǁrun__mutmut_1", globs[1])
    assert not any(fnmatch.fnmatchcase("captum_gradeclip.runs.store.x_check_store_x__mutmut_1", g) for g in globs)


def test_the_narrowed_config_keeps_everything_but_the_modules_file_and_tests():
    module = Module("m", "images.py", ("load_image",), ("tests/a.py", "tests/b.py"), "")
    text = mutation.narrowed_config((ROOT / "setup.cfg").read_text(), module)
    config = configparser.ConfigParser(interpolation=None)
    config.read_string(text)
    assert config.get("mutmut", "only_mutate").split() == ["captum_gradeclip/images.py"]
    assert config.get("mutmut", "pytest_add_cli_args_test_selection").split() == ["tests/a.py", "tests/b.py"]
    assert config.get("mutmut", "process_isolation") == "forkserver"
    assert config.get("tool:pytest", "addopts") == "--doctest-modules"
    with pytest.raises(SystemExit, match=r"\[mutmut\]"):
        mutation.narrowed_config("[metadata]\nname = x\n", module)


def test_select_takes_names_and_patterns_and_refuses_unknown_ones():
    assert [m.name for m in mutation.select(["images", "fast-*"])] == ["images", "fast-path"]
    assert mutation.select([]) == MODULES
    with pytest.raises(SystemExit, match="no-such"):
        mutation.select(["no-such"])


def outcome(status: dict[str, str], diffs: dict[str, str] | None = None, module: Module = MODULES[0]) -> Outcome:
    return Outcome(module, status, diffs or {}, 12.3)


def test_the_score_counts_timeouts_and_hand_picked_kills_as_detected_and_leaves_matching_equivalents_out(monkeypatch):
    monkeypatch.setitem(EQUIVALENT, "a.x_f__mutmut_3", ("y = 2", "the same value"))
    monkeypatch.setitem(EQUIVALENT, "a.x_f__mutmut_4", ("z = 1", "stale: the line changed"))
    monkeypatch.setitem(mutation.BY_HAND, "a.x_f__mutmut_6", ("v = 5", "planted-v"))
    monkeypatch.setitem(mutation.BY_HAND, "a.x_f__mutmut_7", ("u = 1", "stale-u"))
    status = {"a.x_f__mutmut_1": "killed", "a.x_f__mutmut_2": "timeout", "a.x_f__mutmut_3": "survived"}
    status |= {"a.x_f__mutmut_4": "survived", "a.x_f__mutmut_5": "no tests"}
    status |= {"a.x_f__mutmut_6": "survived", "a.x_f__mutmut_7": "survived"}
    diffs = {"a.x_f__mutmut_3": "y = 2", "a.x_f__mutmut_4": "z = 2", "a.x_f__mutmut_5": "w"}
    o = outcome(status, diffs | {"a.x_f__mutmut_6": "v = 5", "a.x_f__mutmut_7": "u = 2"})
    assert o.equivalent() == {"a.x_f__mutmut_3": "the same value"}  # 4's line no longer matches: not trusted
    assert o.by_hand() == {"a.x_f__mutmut_6": "planted-v"}  # nor 7's
    assert o.score() == pytest.approx(3 / 6)  # killed, timeout and by hand of 7 less 1 equivalent
    row = mutation.row(o)
    # generated, killed, by hand, survived (4 and 7), timeout, equivalent, other, score, time
    assert row.split(" | ")[3:12] == ["7", "1", "1", "2", "1", "1", "1", "50.0%", "12 |"]


def test_the_page_lists_survivors_and_equivalents_and_keeps_rows_not_rerun(monkeypatch):
    monkeypatch.setitem(EQUIVALENT, "a.x_f__mutmut_3", ("y = 2", "the same value"))
    images, store = MODULES[0], MODULES[1]
    first = mutation.page(
        [
            outcome(
                {"a.x_f__mutmut_1": "survived", "a.x_f__mutmut_3": "survived"},
                {"a.x_f__mutmut_1": "x = 0", "a.x_f__mutmut_3": "y = 2"},
            ),
            outcome({"b.x_g__mutmut_1": "killed"}, module=store),
        ],
        known="| mutant |\n\n43 of 43 mutants caught.\n",
    )
    assert "- `images` `a.x_f__mutmut_3`: the same value" in first
    assert "- `images` `a.x_f__mutmut_1` (survived): `x = 0`" in first
    assert "43 of 43 mutants caught." in first
    assert "Killed by hand-picked mutants\n\nNone." in first
    # a rerun of images alone: its row and survivors are replaced, store's row and the known table are kept
    second = mutation.page([outcome({"a.x_f__mutmut_1": "killed"})], first)
    rows = [line for line in second.splitlines() if line.startswith("| `")]
    assert [r.split("`")[1] for r in rows] == [images.name, store.name]
    assert "| 100.0% |" in rows[0] and rows[1] in first
    assert "a.x_f__mutmut_1" not in second and "Equivalent mutants\n\nNone." in second
    assert "43 of 43 mutants caught." in second


def test_a_module_mutmut_could_not_run_is_a_row_saying_why():
    spinner = "⠙ Running stats\r⠹ Running stats\nFailed to collect list of tests\n\nexit | 1\n"
    assert mutation._last_lines(spinner, 2) == "Failed to collect list of tests / exit / 1"
    failed = Outcome(MODULES[0], error="mutmut checked no mutant (exit 1): tests failed", seconds=3.0)
    assert mutation.row(failed).startswith("| `images` | `images.py` |")
    assert "| mutmut checked no mutant (exit 1): tests failed |" in mutation.row(failed)
    assert failed.score() is None


def test_the_hand_written_history_is_kept_across_runs():
    first = mutation.page([outcome({"a.x_f__mutmut_1": "killed"})]) + "\n## History\n\nFirst run: 50%.\n"
    second = mutation.page([outcome({"a.x_f__mutmut_1": "killed"})], first)
    assert second.endswith("## History\n\nFirst run: 50%.\n") and second.count("## History") == 1


def test_a_resumed_run_keeps_earlier_detections_only_for_unchanged_functions():
    pytest.importorskip("mutmut", reason="mutmut reads the verdicts: the `mutation` extra")
    before = {
        "exit_code_by_key": {"p.m.x_f__mutmut_1": 1, "p.m.x_f__mutmut_2": 0, "p.m.x_g__mutmut_1": 1},
        "hash_by_function_name": {"x_f": "aaa", "x_g": "bbb"},
    }
    after = {"hash_by_function_name": {"x_f": "aaa", "x_g": "changed"}}
    status = {"p.m.x_f__mutmut_1": "not checked", "p.m.x_f__mutmut_2": "killed", "p.m.x_g__mutmut_1": "not checked"}
    assert mutation.kept_verdicts(before, after, status) == {
        "p.m.x_f__mutmut_1": "killed",  # reset by mutmut, code unchanged: still killed
        "p.m.x_f__mutmut_2": "killed",  # the survivor rerun with the new tests
        "p.m.x_g__mutmut_1": "not checked",  # its function changed: the old verdict means nothing
    }


def test_from_kept_reads_the_verdicts_a_stopped_run_left(tmp_path):
    pytest.importorskip("mutmut", reason="mutmut reads the verdicts: the `mutation` extra")
    module = MODULES[0]
    assert mutation.kept_outcome(module, tmp_path).error.startswith("no copy kept in")
    meta = tmp_path / f"mutation-{module.name}" / "mutants" / "captum_gradeclip" / (module.path + ".meta")
    meta.parent.mkdir(parents=True)
    codes = {f"captum_gradeclip.images.x_resolve_inside__mutmut_{i}": c for i, c in [(1, 1), (2, 36), (3, None)]}
    codes["captum_gradeclip.images.x_printable__mutmut_1"] = 0  # not a configured function: not counted
    meta.write_text(json.dumps({"exit_code_by_key": codes}))
    o = mutation.kept_outcome(module, tmp_path)
    assert sorted(o.status.values()) == ["killed", "not checked", "timeout"]
    assert o.score() == pytest.approx(2 / 3)
    assert "not checked" not in mutation.page([o]).split("## Survivors")[1].split("## Hand-picked")[0]
    assert o.seconds == 0 and mutation.row(o).endswith("| stopped |")  # no time: the run stopped
    seconds = meta.parents[2] / "mutation-seconds"
    for recorded, shown in (("519\n", "| 519 |"), ("76 resumed\n", "| 76 (resumed) |")):
        seconds.write_text(recorded)
        assert mutation.row(mutation.kept_outcome(module, tmp_path)).endswith(shown)
    meta.write_text(json.dumps({"exit_code_by_key": {"captum_gradeclip.images.x_resolve_inside__mutmut_1": None}}))
    assert mutation.kept_outcome(module, tmp_path).error == "stopped before any mutant was checked"


def _plain(text: str) -> str:
    """``text`` with runs of blanks made one, and a dropped last argument (mutmut writes ``x, )``) closed."""
    return re.sub(r",[ \t]*\)", ")", re.sub(r"[ \t]+", " ", text))


def test_each_survivor_counted_by_hand_is_a_hand_picked_mutant_of_the_same_file():
    from tools import known_mutants

    planted = {m.name: m for m in known_mutants.MUTANTS}
    assert mutation.BY_HAND, "nothing counted by hand"
    for name, (line, known) in mutation.BY_HAND.items():
        assert known in planted, f"{name}: no hand-picked mutant {known}"
        module = name.removeprefix("captum_gradeclip.").rsplit(".", 1)[0].replace(".", "/") + ".py"
        assert planted[known].path == module, f"{name}: {known} plants its bug in another file"
        source = (known_mutants.ROOT / "captum_gradeclip" / module).read_text()
        mutated = source.replace(planted[known].old, planted[known].new)
        if line != ")":  # mutmut shows a dropped keyword argument's line as its closing bracket alone
            assert _plain(line) in _plain(mutated) and _plain(line) not in _plain(source), f"{known} plants another bug"
