"""The Colab notebooks: committed clean, and each one runs top to bottom in quick mode.

Each quick run injects ``QUICK = True`` right after the cell tagged ``parameters`` (as
papermill would), executes the notebook with nbclient on the ``python3`` kernel in a fresh
working directory, and checks that it stays within one minute of compute: the kernel's own
CPU time (user + system), which unlike wall-clock time does not grow when other jobs share
the machine's cores. A generous wall-clock limit per cell catches a hung cell.

The first cell, the same in all seven, gets babysit ready: it imports the package if present,
else ``%pip install``s ``BABYSIT_PIP_SPEC``, else (opened from a clone) puts the clone on
``sys.path``, else stops naming what to set. Those branches run here through IPython in a fresh
venv that sees this interpreter's third-party packages but not babysit (see ``fresh_venv``).
"""

import json
import os
import shutil
import site
import subprocess
import sys
import time
import venv

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
SPEC_EXAMPLE = 'BABYSIT_PIP_SPEC = "git+https://github.com/YOUR_NAME/babysit.git"'
PACKAGES = ("recipes", "models", "tuning")  # babysit's top-level packages (setup.cfg)
PIP_NOTE = "you may need to restart the kernel"  # what IPython's %pip prints once pip has run


def read(name):
    return nbformat.read(os.path.join(NB_DIR, f"{name}.ipynb"), as_version=4)


def test_the_seven_notebooks_are_all_there():
    found = sorted(f[:-6] for f in os.listdir(NB_DIR) if f.endswith(".ipynb"))
    assert found == sorted(NAMES)


def test_the_seven_notebooks_share_one_setup_cell():
    setups = {name: read(name).cells[0].source for name in NAMES}
    differ = [name for name in NAMES if setups[name] != setups[NAMES[0]]]
    assert not differ, f"the first cell of {differ} differs from {NAMES[0]}'s: keep them identical"


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
    assert '%pip install -q "{BABYSIT_PIP_SPEC}"' in setup and SPEC_EXAMPLE in setup
    prose = " ".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "no public URL" in prose and "`BABYSIT_PIP_SPEC`" in prose
    assert "REPO_URL" not in setup + prose, f"{name}: BABYSIT_PIP_SPEC replaced REPO_URL"
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


# ---- the setup cell, run through IPython in a fresh venv --------------------------------------


def hidden(entry):
    """Whether a site-packages entry is babysit's own install (editable or not) or a .pth file."""
    return (entry.endswith(".pth") or entry == "__pycache__" or entry in PACKAGES
            or entry.startswith(("__editable__", "babysit-", "babysit.")))


def clean_env(tmp_path, **extra):
    """This process's environment without Python/pip settings: pip offline, no config files."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTHON", "PIP_", "BABYSIT_", "VIRTUAL_ENV"))}
    env.update(PIP_NO_INDEX="1", PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1",
               PYTHONNOUSERSITE="1", IPYTHONDIR=str(tmp_path / "ipython"),
               TF_CPP_MIN_LOG_LEVEL="3")
    env.update(extra)
    return env


@pytest.fixture
def fresh_venv(tmp_path):
    """A venv that has this interpreter's TensorFlow, IPython, pip... but not babysit.

    The venv is made without system site packages (so the base's ``__editable__`` finder,
    which would import babysit from any checkout, never runs). Instead a folder outside the
    venv holds one symlink per entry of the base's site-packages, babysit's own entries and
    every ``.pth`` file left out, and the venv's one ``.pth`` file lists that folder: a path
    line in a ``.pth`` file only extends ``sys.path``, it runs no ``.pth`` file found there.
    Being outside the venv, those packages are never uninstalled or changed by the venv's pip.

    Returns:
        (python, site_packages) of the venv, as strings.
    """
    shared = tmp_path / "base-packages"
    shared.mkdir()
    user = [site.getusersitepackages()] if site.ENABLE_USER_SITE else []
    for directory in [d for d in site.getsitepackages() + user if os.path.isdir(d)]:
        for entry in os.listdir(directory):
            if not hidden(entry) and not (shared / entry).is_symlink():
                (shared / entry).symlink_to(os.path.join(directory, entry))
    venv.create(tmp_path / "venv", with_pip=False, symlinks=True)
    python = str(tmp_path / "venv" / "bin" / "python")

    def ask(code):
        return subprocess.run([python, "-c", code], cwd=tmp_path, env=clean_env(tmp_path),
                              capture_output=True, text=True, check=True).stdout.strip()

    site_packages = ask("import sysconfig; print(sysconfig.get_path('purelib'))")
    with open(os.path.join(site_packages, "base-packages.pth"), "w") as f:
        f.write(f"{shared}\n")
    seen = ask("import sys\nfrom importlib.util import find_spec as f\n"
               "print([f(n) is not None for n in ('tensorflow', 'IPython', 'pip', 'recipes')],"
               " [repr(x) for x in sys.meta_path if 'ditable' in repr(x)])")
    assert seen == "[True, True, True, False] []", "the venv must see TensorFlow, not babysit"
    return python, site_packages


def run_setup_cell(python, cwd, env):
    """Runs notebook 01's first cell through IPython (magics included), then prints a report.

    Returns:
        (returncode, stdout + stderr, the report: recipes' file and sys.prefix, or None).
    """
    report = ("import json\n"
              "print('REPORT', json.dumps({'file': recipes.__file__, 'prefix': sys.prefix}))")
    source = read(NAMES[0]).cells[0].source + "\n" + report
    done = subprocess.run([python, "-m", "IPython", "--quick", "--no-banner", "--colors=NoColor",
                           "--HistoryManager.enabled=False", "-c", source],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("REPORT ")]
    found = json.loads(lines[-1][len("REPORT "):]) if lines else None
    return done.returncode, done.stdout + done.stderr, found


def stub_package(root):
    """A stand-in ``recipes`` package under ``root`` (a clone, or an installed copy)."""
    (root / "recipes").mkdir(parents=True)
    (root / "recipes" / "__init__.py").write_text("")
    return str(root / "recipes" / "__init__.py")


def test_setup_cell_without_babysit_or_spec_says_what_to_set(fresh_venv, tmp_path):
    python, _ = fresh_venv
    elsewhere = tmp_path / "a" / "b" / "c"  # no clone two folders up
    elsewhere.mkdir(parents=True)
    code, output, found = run_setup_cell(python, elsewhere, clean_env(tmp_path))
    assert code != 0 and found is None
    assert "ImportError: babysit is not installed" in output and SPEC_EXAMPLE in output
    assert PIP_NOTE not in output  # nothing was installed


def test_setup_cell_uses_the_clone_it_was_opened_from(fresh_venv, tmp_path):
    python, _ = fresh_venv
    init = stub_package(tmp_path / "clone")
    notebooks = tmp_path / "clone" / "docs" / "notebooks"
    notebooks.mkdir(parents=True)
    code, output, found = run_setup_cell(python, notebooks, clean_env(tmp_path))
    assert code == 0, output
    assert found["file"] == init and PIP_NOTE not in output


def test_setup_cell_installs_nothing_when_babysit_is_importable(fresh_venv, tmp_path):
    python, _ = fresh_venv
    init = stub_package(tmp_path / "installed")
    env = clean_env(tmp_path, PYTHONPATH=str(tmp_path / "installed"),
                    BABYSIT_PIP_SPEC=str(tmp_path / "no-such-babysit.whl"))
    code, output, found = run_setup_cell(python, tmp_path, env)
    assert code == 0, output
    assert found["file"] == init and PIP_NOTE not in output  # the spec was not even tried


def build_wheel(tmp_path):
    """babysit's wheel, built offline from a copy of this checkout (no build/ left in it)."""
    source = tmp_path / "source"
    source.mkdir()
    for entry in os.listdir(ROOT):
        if os.path.isfile(os.path.join(ROOT, entry)):
            shutil.copy2(os.path.join(ROOT, entry), source / entry)
    for package in PACKAGES:
        shutil.copytree(os.path.join(ROOT, package), source / package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path / "dist"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "-w", str(dist),
                            "-q", "--no-deps", "--no-build-isolation"],
                           env=clean_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = dist.glob("babysit-*.whl")
    return wheel


def test_setup_cell_installs_babysit_from_BABYSIT_PIP_SPEC_into_a_fresh_venv(fresh_venv, tmp_path):
    python, site_packages = fresh_venv
    wheel = build_wheel(tmp_path)
    elsewhere = tmp_path / "a" / "b" / "c"
    elsewhere.mkdir(parents=True)
    # pip runs offline (PIP_NO_INDEX): it may install the wheel and nothing it would fetch.
    env = clean_env(tmp_path, BABYSIT_PIP_SPEC=str(wheel))
    start = time.time()
    code, output, found = run_setup_cell(python, elsewhere, env)
    print(f"setup cell: {time.time() - start:.1f} s")
    assert code == 0, output
    assert PIP_NOTE in output  # %pip ran in the kernel's own interpreter
    assert os.path.realpath(found["prefix"]) == os.path.realpath(tmp_path / "venv")
    assert found["file"] == os.path.join(site_packages, "recipes", "__init__.py")
    assert not found["file"].startswith(ROOT + os.sep)
    dist_info = "-".join(wheel.name.split("-")[:2]) + ".dist-info"  # babysit-0.1.0.dist-info
    installed = set(os.listdir(site_packages)) - {"base-packages.pth"}
    assert installed == {*PACKAGES, dist_info}, "pip installed more than babysit (or less)"
