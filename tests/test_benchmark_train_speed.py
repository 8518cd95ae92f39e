"""benchmarks/train_speed.py: both renderers timed side by side, one row per model and measure, a page section."""

from __future__ import annotations

import pytest

from benchmarks import train_speed


def test_rows_and_page_section(tmp_path, capsys):
    page = tmp_path / "train_speed.md"
    train_speed.main(["--models", "vit", "--steps", "1", "--repeats", "1", "--write", str(page)])
    text = page.read_text()
    assert "<!-- train_speed.py: cpu-1 -->" in text and "| vit | data only |" in text
    assert "| vit | training step |" in text
    rows = [line for line in text.splitlines() if line.startswith("| vit |")]
    for row in rows:
        numpy_rate, torch_rate, ratio = (float(c.strip().rstrip("x")) for c in row.split("|")[3:6])
        assert numpy_rate > 0 and torch_rate > 0 and ratio == pytest.approx(torch_rate / numpy_rate, rel=0.03, abs=0.01)
    assert "training step" in capsys.readouterr().out


def test_bad_settings_are_refused():
    with pytest.raises(SystemExit) as info:
        train_speed.main(["--steps", "0"])
    assert info.value.code == 2
