"""The Colab notebooks: committed clean, and each one runs top to bottom in quick mode.

Each quick run injects ``QUICK = True`` right after the cell tagged ``parameters`` (as
papermill would), executes the notebook with nbclient on the ``python3`` kernel in a fresh
working directory, and checks that it stays within one minute of compute: the kernel's own
CPU time (user + system), which unlike wall-clock time does not grow when other jobs share
the machine's cores. A generous wall-clock limit per cell catches a hung cell.
"""

import json
import os
import time

import nbformat
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NB_DIR = os.path.join(ROOT, "docs", "notebooks")
NAMES = ("01_quickstart", "02_initialization", "03_babysitting", "04_search",
         "05_augmentation_tta", "06_ensembles_distillation", "07_your_own_model")
CPU_BUDGET_S = 60  # each quick notebook: at most a minute of the kernel's CPU time
CELL_TIMEOUT_S = 600
CPU_PROBE = ("import json, resource\n"
             "_u = resource.getrusage(resource.RUSAGE_SELF)\n"
             "print('CPU_SECONDS', json.dumps(_u.ru_utime + _u.ru_stime))")


def read(name):
    return nbformat.read(os.path.join(NB_DIR, f"{name}.ipynb"), as_version=4)


def test_the_seven_notebooks_are_all_there():
    found = sorted(f[:-6] for f in os.listdir(NB_DIR) if f.endswith(".ipynb"))
    assert found == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_is_clean_and_colab_ready(name):
    nb = read(name)
    nbformat.validate(nb)
    assert nb.nbformat == 4 and nb.metadata["kernelspec"]["name"] == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    for cell in code:
        assert cell.outputs == [], f"{name}: a cell still has outputs; clear them"
        assert cell.execution_count is None, f"{name}: a cell still has an execution count"
    assert nb.cells[0].cell_type == "code", f"{name}: the first cell must be the setup cell"
    setup = nb.cells[0].source
    assert '"google.colab" in sys.modules' in setup and "%pip install" in setup
    assert "REPO_URL" in setup
    prose = " ".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "no public URL" in prose and "REPO_URL" in prose
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and "QUICK = False" in params[0].source


def quick_version(nb):
    """The notebook with ``QUICK = True`` after the parameters cell and a CPU probe at the end."""
    index = next(i for i, c in enumerate(nb.cells)
                 if "parameters" in c.metadata.get("tags", []))
    injected = nbformat.v4.new_code_cell("QUICK = True")
    injected.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(index + 1, injected)
    nb.cells.append(nbformat.v4.new_code_cell(CPU_PROBE))
    return nb


def text_of(cell):
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.output_type == "stream")


@pytest.mark.parametrize("name", NAMES)
def test_quick_notebook_runs_top_to_bottom(name, tmp_path, monkeypatch):
    from nbclient import NotebookClient

    # The kernel is a new process: it must find this checkout, whatever is pip-installed.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    nb = quick_version(read(name))
    client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    start = time.time()
    client.execute()  # raises CellExecutionError, naming the cell, if any cell fails
    wall = time.time() - start

    cpu = json.loads(text_of(nb.cells[-1]).split("CPU_SECONDS", 1)[1])
    print(f"{name}: {cpu:.1f} s kernel CPU, {wall:.1f} s wall")
    assert cpu <= CPU_BUDGET_S, f"{name} took {cpu:.0f} s of CPU in quick mode (> {CPU_BUDGET_S})"
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert images, f"{name} showed no figure"
    assert (tmp_path / "babysit_runs").is_dir()  # it wrote into the working directory
    assert not any(o.output_type == "error" for c in nb.cells for o in c.get("outputs", []))
