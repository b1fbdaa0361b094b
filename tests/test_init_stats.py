"""recipes.experiments.init_stats: the lecture's initialization experiment."""

import json
import os
import subprocess
import sys

import pytest

from recipes.experiments import init_stats

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def results():
    # The lecture's full size: 10 layers of 500 units, 1000 unit-Gaussian examples.
    return init_stats.run_experiment()


def test_tanh_small_collapses(results):
    assert results["summary"]["tanh+small"]["last_std"] < 1e-4


def test_tanh_large_saturates(results):
    assert results["summary"]["tanh+large"]["last_saturated"] >= 0.8


def test_tanh_xavier_stays_usable(results):
    assert 0.1 < results["summary"]["tanh+xavier"]["last_std"] < 0.5


def test_relu_xavier_shrinks(results):
    assert results["summary"]["relu+xavier"]["std_ratio"] >= 10


def test_relu_he_holds(results):
    assert 0.5 <= results["summary"]["relu+he"]["std_ratio"] <= 2


@pytest.mark.parametrize("case", [init_stats.label(a, i, "batch") for a, i in init_stats.CASES])
def test_batchnorm_keeps_every_case_well_scaled(results, case):
    for record in results["runs"][case]["stats"]:  # every layer, not just the last
        assert 0.4 < record["std"] < 0.8
        assert record["saturated"] < 0.05 and record["dead"] < 0.05


def test_results_are_json_ready(results):
    assert len(results["runs"]) == 10
    assert all(len(r["stats"]) == 10 for r in results["runs"].values())
    assert results["setup"]["batchnorm_mode"].startswith("training")
    json.dumps(results)


def _cli(*args):
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "recipes.experiments.init_stats", *args],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)


def test_cli_quick_writes_results_and_plot(tmp_path):
    proc = _cli(f"--workdir={tmp_path}", "--quick")
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(tmp_path)) == ["init_stats.png", "results.json"]
    with open(tmp_path / "results.json") as f:
        assert json.load(f)["setup"]["units"] == 100


@pytest.mark.parametrize("args", [("--bogus=1",), ("--quick",), ("--workdir=/tmp/x", "extra")])
def test_cli_bad_flags_exit_2_with_one_line(args):
    proc = _cli(*args)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
