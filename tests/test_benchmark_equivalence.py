"""benchmarks/equivalence.py: the comparison says identical, within tolerance or different, and fails on the last."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "equivalence.py"


@pytest.fixture(scope="module")
def compare():
    return runpy.run_path(str(SCRIPT))["compare"]


def test_identical_and_within_tolerance_pass(compare, capsys):
    ref = {
        "a": torch.tensor([1.0, 2.0]),
        "b": torch.tensor([1.0, 2.0], dtype=torch.float64),
        "err": "TypeError: no pool",
    }
    now = {
        "a": torch.tensor([1.0, 2.0]),
        "b": torch.tensor([1.0, 2.0 + 1e-7], dtype=torch.float64),
        "err": "TypeError: no pool",
    }
    assert compare(ref, now, 1e-6) == 0
    assert "3 entries: 2 identical, 1 within 1e-06 (worst 5e-08), 0 differ" in capsys.readouterr().out


def test_differences_missing_entries_and_changed_errors_fail(compare, capsys):
    ref = {"a": torch.tensor([1.0, 2.0]), "b": torch.ones(2), "c": torch.ones(2), "err": "TypeError: x"}
    now = {"a": torch.tensor([1.0, 2.1]), "b": torch.ones(3), "err": "ValueError: x", "new": torch.ones(1)}
    assert compare(ref, now, 1e-6) == 1
    out = capsys.readouterr().out
    assert "4 entries: 0 identical, 0 within 1e-06 (worst 0.05), 4 differ" in out
    assert "a: relative difference 0.05" in out and "b: shape/dtype (2,)" in out and "c: missing" in out
    assert "err: 'TypeError: x' -> 'ValueError: x'" in out and "NEW  new" in out
