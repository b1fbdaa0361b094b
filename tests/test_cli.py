"""The command lines, run as a user runs them: real processes, exit codes, stderr."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(*args, module="recipes.train"):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_train_cli_quick_run_writes_artifacts(tmp_path):
    workdir = tmp_path / "run"
    proc = run_cli("--config=digits_mlp:quick", f"--workdir={workdir}", "--verbose=0",
                   "--config.optimizer.learning_rate=3e-3")
    assert proc.returncode == 0, proc.stderr
    config = json.loads((workdir / "config.json").read_text())
    assert config["optimizer"]["learning_rate"] == 3e-3
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["epochs"] == 5


@pytest.mark.parametrize("args, needle", [
    (["--config.dataset.name=imagenet"], "imagenet"),
    (["--config.optimizer.learning_rate=-1"], "learning_rate"),
    (["--config.optimizer.name=sgdd"], "sgdd"),
    (["--config.optimizer.lr=0.1"], "lr"),
    (["--config.train.epochs=many"], "epochs"),
    (["--config=no_such_recipe"], "no_such_recipe"),
    (["--config=/nonexistent/file.py"], "does not exist"),
    (["--nonsense_flag=1"], "nonsense_flag"),
])
def test_train_cli_bad_input_is_one_line_and_exit_2(tmp_path, args, needle):
    workdir = tmp_path / "run"
    proc = run_cli("--config=digits_mlp:quick", f"--workdir={workdir}", *args)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "error:" in lines[0] and needle in lines[0]
    assert not workdir.exists()


def test_train_cli_requires_workdir():
    proc = run_cli("--config=digits_mlp:quick")
    assert proc.returncode == 2
    assert "--workdir" in proc.stderr and "Traceback" not in proc.stderr
