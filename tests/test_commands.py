"""The command line's help: `--help` and `--version` answer at once (no torch import), every command and every
option is described, and the README's Command line section names every option."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import captum_gradeclip
from captum_gradeclip.__main__ import main
from captum_gradeclip.cli.commands import COMMANDS, PARSERS

README = Path(__file__).resolve().parents[1] / "README.md"


def _run(*args: str) -> subprocess.CompletedProcess:
    # -X importtime lists every module the process imports, on stderr
    return subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "captum_gradeclip", *args], capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip


def _imported(stderr: str) -> set[str]:
    return {line.split("|")[-1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


def test_help_exits_0_and_describes_every_command_without_importing_torch():
    result = _run("--help")
    assert result.returncode == 0, result.stderr
    for name, (summary, _, _) in COMMANDS.items():
        assert re.search(rf"^\s+{re.escape(name)}\b", result.stdout, re.M), name
        assert " ".join(summary.split()[:4]) in " ".join(result.stdout.split()), summary
    assert "torch" not in _imported(result.stderr) and "matplotlib" not in _imported(result.stderr)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_command_help_is_for_users_and_imports_no_torch(command):
    result = _run(command, "--help")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert text.startswith(f"usage: captum-gradeclip {command}") and "example:" in text
    assert ":func:" not in text and "``" not in text and ":mod:" not in text, "no developer (reST) text"
    for action in PARSERS[command]()._actions:
        assert action.help, f"{command}: {action.option_strings or action.dest} has no help"
    assert "torch" not in _imported(result.stderr)


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"captum-gradeclip {captum_gradeclip.__version__}"


def test_no_command_prints_the_help_and_exits_2(capsys):
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2 and "explain-dataset" in capsys.readouterr().err


def test_unknown_command_is_one_line_naming_the_commands(capsys):
    with pytest.raises(SystemExit) as info:
        main(["bogus"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and len(err.strip().splitlines()) == 1
    assert "unknown command 'bogus'; expected one of demo, explain, explain-dataset" in err


def test_readme_command_line_section_names_every_option():
    text = README.read_text()
    section = text[text.index("## Command line") : text.index("\n## ", text.index("## Command line") + 5)]
    for command, build in PARSERS.items():
        assert f"captum-gradeclip {command}" in section
        for action in build()._actions:
            for option in action.option_strings:
                if option not in ("-h",):
                    assert option in section, f"README's Command line section does not mention {command} {option}"
