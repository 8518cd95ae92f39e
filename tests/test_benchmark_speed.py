"""benchmarks/speed.py runs end to end and reports every case as a finite ratio (no timing assertions)."""

from __future__ import annotations

import math
import runpy
from pathlib import Path

SPEED = Path(__file__).parents[1] / "benchmarks" / "speed.py"


def test_speed_benchmark_smoke(tmp_path, capsys):
    out = tmp_path / "speed.md"
    module = runpy.run_path(str(SPEED))
    module["main"](["--model", "tiny", "--prompts", "6", "--captions", "6", "--images", "2", "--repeats", "1",
                    "--naive-pairs", "2", "--metric-images", "2", "--steps", "4", "--write", str(out)])  # fmt: skip
    printed = capsys.readouterr().out
    rows = [line for line in printed.splitlines() if line.startswith("| ") and "---" not in line][1:]
    methods = {(r.split("|")[1].strip().split(" ")[0], r.split("|")[2].strip()) for r in rows}
    assert ("1", "naive per-pair autograd") in methods and ("peak", "Grad-ECLIP native") in methods
    assert ("deletion", "metrics") in methods and ("1", "GAME (last block)") in methods
    assert len(rows) == 11
    for r in rows:
        ratio = float(r.split("|")[5])
        assert math.isfinite(ratio) and ratio > 0
    page = out.read_text()
    assert page.startswith("# Speed benchmark") and rows[0] in page
    assert "<!-- speed.py: tiny cpu fp32 -->\n## `tiny` on cpu, fp32\n\n`python -m benchmarks.speed --model" in page
