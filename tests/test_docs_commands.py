"""The getting-started page's shell commands run as written (but the demo, which tests/test_demo.py covers)."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

from tests.test_docs_snippets import blocks

ROOT = Path(__file__).resolve().parents[1]


def _first_picture_commands() -> list[str]:
    page = (ROOT / "docs" / "getting_started.md").read_text()
    shell = [b for b in blocks(page, "getting_started.md") if b.language == "bash" and "scene.png" in b.code]
    assert len(shell) == 1, "the page's first-picture block, which makes and explains scene.png"
    return [line for line in shell[0].code.splitlines() if line.strip() and " demo " not in line]


def test_getting_started_makes_the_scene_it_explains(tmp_path):
    commands = _first_picture_commands()
    assert any("scene.png" in c and " explain " not in c for c in commands), "a line that makes scene.png"
    bin_dir = Path(sys.executable).parent
    for command in commands:
        words = shlex.split(command, comments=True)
        assert words[0].startswith(".venv/bin/"), command
        words[0] = str(bin_dir / words[0].removeprefix(".venv/bin/"))
        done = subprocess.run(words, cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{command}\n{done.stderr}"
    assert (tmp_path / "scene.png").is_file()
    assert (tmp_path / "gradeclip_explain" / "explanation.png").is_file()
