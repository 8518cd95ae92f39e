"""Every tutorial notebook runs end to end on ShapesCLIP, offline, and draws its figures.

The notebooks are committed without outputs; this test executes each one in a fresh Jupyter kernel (nbclient and
ipykernel, from the ``test`` extra), so any cell that raises fails the test.
"""

from __future__ import annotations

import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

TUTORIALS = Path(__file__).parents[1] / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("*.ipynb"))
BUDGET_S = 180  # each notebook must run in under 3 minutes on 2 CPU cores (they take well under a minute)


def test_the_five_tutorials_are_there():
    assert [p.stem for p in NOTEBOOKS] == [
        "01_quickstart",
        "02_captum_methods",
        "03_evaluating_explanations",
        "04_text_and_words",
        "05_finetuning",
    ]
    assert not list(TUTORIALS.glob("*.py")), "the tutorials are notebooks"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_notebook_is_valid_and_has_no_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and any(cell.cell_type == "markdown" for cell in notebook.cells)
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: clear the outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_and_draws(path, tmp_path):
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook, timeout=BUDGET_S, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError, with the cell and its traceback, when a cell fails
    seconds = time.perf_counter() - start
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert all(cell.execution_count for cell in notebook.cells if cell.cell_type == "code"), "every cell ran"
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert images, f"{path.name} shows no figure"
    assert seconds < BUDGET_S, f"{path.name} took {seconds:.0f} s"
