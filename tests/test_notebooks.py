"""The notebooks are the workshop: each runs top to bottom on the local
backend (QUICK), and its last cell asserts the lesson's key number. Their
scenario runs are the session's demo's (tests/conftest.py), read through
WORKSHOP_RESULTS rather than run again: the demo runs each of them anyway."""

import time

import jupytext
import nbformat
import pytest
from nbclient import NotebookClient

from conftest import DEMO_TIMEOUT_S
from support import ROOT, STAGES

NOTEBOOKS_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(p.stem for p in NOTEBOOKS_DIR.glob("0*.py"))
CELL_TIMEOUT_S = 120


def test_there_is_a_notebook_per_stage_plus_setup_compare_and_the_clients_half():
    assert NOTEBOOKS == ["00-setup", *STAGES, f"{len(STAGES) + 1:02}-compare", f"{len(STAGES) + 2:02}-client"]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_paired_with_its_py_twin_and_has_no_outputs(name):
    twin = jupytext.read(NOTEBOOKS_DIR / f"{name}.py")
    notebook = nbformat.read(NOTEBOOKS_DIR / f"{name}.ipynb", as_version=4)
    assert [c.source for c in notebook.cells] == [c.source for c in twin.cells]
    assert notebook.metadata.kernelspec.name == "python3"
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


@pytest.mark.timeout(CELL_TIMEOUT_S * 5 + DEMO_TIMEOUT_S)  # the first may wait for the session's demo
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_top_to_bottom_on_the_local_backend(name, record_property, demo, monkeypatch):
    """Its scenarios' results are the session's demo's (the same code, the
    same backend, run a moment before): every cell runs, its own work too."""
    monkeypatch.setenv("WORKSHOP_RESULTS", str(demo["results_json"]))
    notebook = jupytext.read(NOTEBOOKS_DIR / f"{name}.py")
    (parameters,) = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    parameters.source += '\nBACKEND = "local"\nQUICK = True\n'  # what papermill would inject
    started = time.monotonic()
    NotebookClient(notebook, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS_DIR)}}).execute()
    seconds = time.monotonic() - started
    record_property("seconds", round(seconds, 1))
    print(f"\n{name}: {seconds:.1f} s")  # the budget, 60 s on two cores, is watched, not asserted
