"""Every notebook in notebooks/ and course/ runs top to bottom in a fresh kernel without an error, offline; the committed copies
carry their outputs (they are read on the web) and stay under 1 MB.

The notebooks are executed in memory: nothing is written back. The kernel is this interpreter (sys.executable),
through a kernel spec written for the test, so the notebooks see the same packages as the tests whether or not
the virtual environment is activated (a plain "python3" spec would start whatever `python` is on PATH).
"""
import json
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
EXPECTED = ["01_walkthrough.ipynb", "02_sigmoid_loss.ipynb", "03_train_tiny.ipynb", "04_parity.ipynb",
            "05_quantization.ipynb"]
KERNEL = "siglip-min-tests"
CELL_TIMEOUT = 300  # seconds; each notebook as a whole takes well under 3 minutes on 2 CPU cores


def notebook_paths():
    return sorted(NOTEBOOKS.glob("*.ipynb"))


def course_notebooks():
    """The course's instructor notebooks (solutions in place), one per assignment; each runs in its own folder."""
    return sorted((ROOT / "course").glob("*/*.ipynb"))


@pytest.fixture(scope="module")
def kernel_specs(tmp_path_factory):
    """A kernel spec that starts ipykernel on this very interpreter."""
    kernels = tmp_path_factory.mktemp("kernels")
    (kernels / KERNEL).mkdir()
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": f"Python ({sys.executable})", "language": "python"}
    (kernels / KERNEL / "kernel.json").write_text(json.dumps(spec))
    return KernelSpecManager(kernel_dirs=[str(kernels)])


def test_the_five_notebooks_are_there():
    assert [p.name for p in notebook_paths()] == EXPECTED


@pytest.mark.parametrize("path", notebook_paths() + course_notebooks(), ids=lambda p: p.stem)
def test_committed_with_outputs_and_small(path):
    nb = nbformat.read(path, as_version=4)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    unexecuted = [i for i, cell in enumerate(code) if cell.source.strip() and cell.execution_count is None]
    assert not unexecuted, f"{path.name}: code cells {unexecuted} have no outputs; execute the notebook and commit it"
    errors = [out for cell in code for out in cell.outputs if out.output_type == "error"]
    assert not errors, f"{path.name}: committed with an error output: {errors[0].ename}: {errors[0].evalue}"
    assert path.stat().st_size < 1_000_000, f"{path.name} is {path.stat().st_size} bytes, over 1 MB"


@pytest.mark.parametrize("path", notebook_paths() + course_notebooks(), ids=lambda p: p.stem)
def test_runs_top_to_bottom(path, kernel_specs, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the notebooks must not need the network
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    nb = nbformat.read(path, as_version=4)
    km = KernelManager(kernel_name=KERNEL, kernel_spec_manager=kernel_specs)
    client = NotebookClient(nb, km=km, timeout=CELL_TIMEOUT, allow_errors=False,
                            resources={"metadata": {"path": str(path.parent)}})  # cwd = its folder, as in Jupyter
    client.execute()  # raises CellExecutionError, naming the cell, on the first error
