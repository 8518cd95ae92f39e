"""benchmarks/dataset.py runs the real command line three ways and finds the stores equal (no timing assertions)."""

from __future__ import annotations

import math
import runpy
from pathlib import Path

DATASET = Path(__file__).parents[1] / "benchmarks" / "dataset.py"


def test_dataset_benchmark_smoke(tmp_path, capsys):
    out = tmp_path / "dataset_speed.md"
    module = runpy.run_path(str(DATASET))
    module["main"](["--items", "6", "--chunk-size", "2", "--batch-size", "2", "--write", str(out)])
    printed = capsys.readouterr().out
    rows = [line for line in printed.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [r.split("|")[1].strip() for r in rows] == [
        "1 process, 2 threads",
        "torchrun, 2 processes x 1 thread",
        "1 process, 1 thread",
    ]
    for r in rows:
        cells = [c.strip() for c in r.split("|")]
        assert math.isfinite(float(cells[3])) and float(cells[3]) > 0
        assert cells[5] == "yes"  # the same store, whatever the number of processes
    assert float(rows[0].split("|")[4]) == 1.0
    assert out.read_text().startswith("# Dataset throughput") and rows[1] in out.read_text()
