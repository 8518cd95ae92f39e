"""benchmarks/dataset.py runs the real command line three ways and finds the stores equal (no timing assertions)."""

from __future__ import annotations

import math
import runpy
from pathlib import Path

DATASET = Path(__file__).parents[1] / "benchmarks" / "dataset.py"


def test_dataset_benchmark_smoke(tmp_path, capsys):
    out = tmp_path / "dataset_speed.md"
    module = runpy.run_path(str(DATASET))
    module["main"](["--items", "6", "--chunk-size", "2", "--batch-size", "2", "--store-items", "700",
                    "--map-side", "4", "--store-chunk-size", "256", "--repeats", "2", "--write", str(out)])  # fmt: skip
    printed = capsys.readouterr().out
    tables = printed.split("| store cost |")
    rows = [line for line in tables[0].splitlines() if line.startswith("| ") and "---" not in line][1:]
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
    cost_table, floor_table = tables[1].split("| one file, pyarrow alone / numpy.load |")
    costs = [line.split("|") for line in cost_table.splitlines() if line.startswith("| ") and "---" not in line]
    assert [c[1].strip() for c in costs] == ["checking, writing and opening the store / explaining",
                                            "open + maps() as one tensor / numpy.load of the same .npy"]  # fmt: skip
    for cells in costs:
        ours, against = float(cells[2]), float(cells[3])
        # a 700-item numpy.load can print as 0.000 s: only our side must take measurable time
        assert 0 < ours and 0 <= against and cells[6].strip() in ("yes", "NO")
    share, ratio = float(costs[0][4].strip().rstrip("%")) / 100, float(costs[1][4].strip().rstrip("x"))
    assert abs(share - float(costs[0][2]) / float(costs[0][3])) < 0.01 and ratio > 0
    assert "differ from the .npy" not in printed  # the maps read back are the maps written
    # the format's own floor, in the same run: pyarrow alone reading the same maps from one file per column type
    floors = [line.split("|") for line in floor_table.splitlines() if line.startswith("| ") and "---" not in line]
    assert [c[1].strip().split(" (")[0] for c in floors] == ["the map as a fixed-size list of float32",
                                                            "the map as fixed-size binary"]  # fmt: skip
    for cells in floors:
        assert float(cells[2]) > 0 and float(cells[4].strip().rstrip("x")) > 0
