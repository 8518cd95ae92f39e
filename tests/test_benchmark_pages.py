"""benchmarks/_pages.py: a run rewrites only its own section of a shared docs page."""

from __future__ import annotations

from benchmarks._pages import without_options, write_section


def test_a_rerun_replaces_its_own_section_and_keeps_the_others_in_order(tmp_path):
    page = tmp_path / "docs" / "page.md"
    write_section(page, "tool.py", "# Title\n\nold intro\n", "a b", "## A\n\nfirst")
    write_section(page, "tool.py", "# Title\n\nold intro\n", "c:d", "## C\n\nsecond\n")
    write_section(page, "tool.py", "# Title\n\nnew intro\n", "a b", "## A\n\nthird")
    text = page.read_text()
    assert text == (
        "# Title\n\nnew intro\n"
        "\n<!-- tool.py: a b -->\n## A\n\nthird\n<!-- /tool.py: a b -->\n"
        "\n<!-- tool.py: c:d -->\n## C\n\nsecond\n<!-- /tool.py: c:d -->\n"
    )


def test_another_tools_markers_are_not_sections_of_this_one(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# T\n\n<!-- other.py: x -->\nkept out\n<!-- /other.py: x -->\n")
    write_section(page, "tool.py", "# T\n", "x", "mine")
    assert page.read_text() == "# T\n\n<!-- tool.py: x -->\nmine\n<!-- /tool.py: x -->\n"


def test_without_options_drops_the_option_and_its_value_in_both_spellings():
    argv = ["--model", "shapes", "--cache", "c.json", "--steps", "4", "--cache=d.json", "--json", "r.json"]
    assert without_options(argv, "--cache", "--json") == ["--model", "shapes", "--steps", "4"]
    assert without_options(["--cachex", "1"], "--cache") == ["--cachex", "1"]
