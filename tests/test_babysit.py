"""The whole procedure, end to end on digits, through the Python API and the CLI."""

import json
import os
import re
import subprocess
import sys
import time

import pytest

from recipes import babysit, configs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NO_SEARCH = "sanity,overfit,lr_range,train,diagnose,report"


def quiet(name="digits_mlp", **overrides):
    cfg = configs.get(name)
    cfg.train.verbose = 0
    for path, value in overrides.items():
        branch, field = path.split(".")
        cfg[branch][field] = value
    return cfg


def test_parse_steps():
    assert babysit.parse_steps("all") == list(babysit.STEPS)
    assert babysit.parse_steps("train,sanity") == ["sanity", "train"]  # procedure order
    with pytest.raises(ValueError, match="babysit.steps"):
        babysit.parse_steps("sanity,bogus")


def test_cli_runs_the_whole_procedure_on_digits_and_writes_the_report(tmp_path):
    workdir = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=ROOT)
    for name in ("TF_CPP_MIN_LOG_LEVEL", "BABYSIT_TF_LOGS"):  # the console as a user gets it
        env.pop(name, None)
    start = time.time()
    proc = subprocess.run([sys.executable, "-m", "recipes.babysit", "--config=digits_mlp",
                           f"--workdir={workdir}"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    seconds = time.time() - start
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Quiet: no TensorFlow C++ line (E0000 ...) and no absl-format line (W1205 06:14:30 ...).
    noise = [line for line in (proc.stdout + proc.stderr).splitlines()
             if re.match(r"[EWIF]\d{4} ", line)]
    assert not noise, noise[:3]
    closing = proc.stdout.rstrip().splitlines()[-4:]  # the verdict block ends the run
    assert closing[0].startswith("verdict: test accuracy 0."), proc.stdout[-1500:]
    assert closing[1].startswith(f"report:  open file://{workdir}/report.html"), closing
    assert closing[2] == f"curves:  tensorboard --logdir {workdir}/tensorboard", closing
    assert closing[3].startswith("next:    python -m recipes."), closing
    assert (workdir / "babysit.log").is_file()  # where the libraries' warnings went
    lines = [line for line in proc.stdout.splitlines() if line.startswith("[")]
    names = " ".join(lines)
    for step in ("initial loss", "overfit small", "learning-rate range", "search", "train",
                 "diagnosis", "report"):
        assert step in names, (step, proc.stdout)
    assert "FAIL" not in names, proc.stdout
    for name in ("report.md", "report.html", "babysit.json", "summary.json", "findings.json",
                 "history.csv", "model.keras", "plots/lr_range.png"):
        assert (workdir / name).is_file(), name
    html = (workdir / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 5
    assert "--config=base" in html and "--config.optimizer.learning_rate=" in html
    assert "<details><summary>Exact config (JSON)</summary>" in html
    result = json.loads((workdir / "babysit.json").read_text())
    assert result["summary"]["test_accuracy"] >= 0.9
    # The cost cuts keep every verdict: the steps pass and fail as in the committed
    # measurement of the default digits procedure (benchmarks/babysit_cost.py).
    verdicts = [f"{s['name']}: {({True: 'PASS', False: 'FAIL'}).get(s['passed'], '----')}"
                for s in result["steps"]]
    cost = json.loads(open(os.path.join(ROOT, "docs/results/babysit_cost.json")).read())
    assert verdicts == cost["tasks"]["digits_mlp"]["verdicts"]
    assert seconds < 300  # the budget is 3 minutes on 2 free cores; CI shares them


def test_failed_overfit_stops_the_procedure_and_still_reports(tmp_path):
    cfg = quiet(**{"optimizer.name": "sgd", "optimizer.learning_rate": 1e-7,
                   "babysit.overfit_epochs": 20})
    lines = []
    result = babysit.run(cfg, str(tmp_path / "w"), steps="overfit,lr_range,train,report",
                         echo=lines.append)
    assert result["stopped"]
    assert [s["name"] for s in result["steps"]] == ["overfit small", "report"]
    assert any("stopping" in line for line in lines)
    assert (tmp_path / "w" / "report.html").exists()
    assert not (tmp_path / "w" / "summary.json").exists()


def test_finished_procedure_is_not_overwritten(tmp_path):
    workdir = tmp_path / "w"
    babysit.run(quiet("digits_mlp:quick"), str(workdir), steps="train", echo=lambda s: None)
    before = (workdir / "summary.json").read_text()
    with pytest.raises(ValueError, match="finished run"):
        babysit.run(quiet("digits_mlp:quick"), str(workdir), steps="train", echo=lambda s: None)
    assert (workdir / "summary.json").read_text() == before


def test_cli_bad_steps_is_one_line_and_exit_2(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-m", "recipes.babysit", "--config=digits_mlp",
                           f"--workdir={tmp_path / 'w'}", "--steps=sanity,bogus"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "babysit.steps" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
