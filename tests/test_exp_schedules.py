"""recipes.experiments.schedules: the quick run, the lr actually used, the verdict rules."""

import json
import math
import os
import subprocess
import sys

import pytest

from recipes.experiments import common
from recipes.experiments import schedules as exp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("schedules")
    return workdir, exp.run_experiment(str(workdir), quick=True)


def test_results_json_on_disk_equals_the_returned_dict(run):
    workdir, results = run
    assert json.loads((workdir / "results.json").read_text()) == results
    assert results["experiment"] == "schedules" and results["quick"] is True
    assert results["dataset"] == "digits"
    assert results["command"] == "python -m recipes.experiments.schedules --workdir=DIR --quick"


def test_every_variant_has_finite_numbers_and_curves(run):
    _, results = run
    epochs = results["setup"]["epochs"]
    assert list(results["variants"]) == list(exp.NAMES)
    for name, v in results["variants"].items():
        for key in ("test_accuracy", "val_accuracy", "train_accuracy"):
            assert 0.0 <= v[key] <= 1.0, (name, key)
        for key in ("lr", "loss", "val_loss", "accuracy", "val_accuracy"):
            assert len(v["history"][key]) == epochs, (name, key)
            assert all(x is not None and math.isfinite(x) for x in v["history"][key])
    assert max(v["test_accuracy"] for v in results["variants"].values()) > 0.8


def test_the_lr_actually_used_follows_each_schedule(run):
    _, results = run
    v, lr0 = results["variants"], results["setup"]["learning_rate"]
    epochs = results["setup"]["epochs"]
    assert v["constant"]["history"]["lr"] == pytest.approx([lr0] * epochs)
    step = v["step"]["history"]["lr"]  # x 0.1 every round(0.4 * 6) = 2 epochs
    assert step == pytest.approx([lr0, lr0, lr0 / 10, lr0 / 10, lr0 / 100, lr0 / 100], rel=1e-4)
    for name in ("exponential", "cosine", "warmup_cosine"):
        lr = v[name]["history"]["lr"]
        assert all(a > b for a, b in zip(lr, lr[1:])), name  # strictly decreasing
    assert v["exponential"]["history"]["lr"][-1] == pytest.approx(lr0 / 100, rel=0.2)
    assert v["cosine"]["history"]["lr"][-1] < lr0 / 100  # cosine to alpha = 0
    # Warmup: the first epoch ends at the peak, then the cosine starts from it.
    assert v["warmup_cosine"]["history"]["lr"][0] == pytest.approx(lr0, rel=1e-3)
    assert v["cosine_high"]["history"]["lr"][0] > 3 * v["cosine"]["history"]["lr"][0]
    assert all(x <= lr0 * (1 + 1e-6) for x in v["plateau"]["history"]["lr"])


def test_plot_and_claims(run):
    workdir, results = run
    assert os.path.getsize(workdir / "schedules.png") > 1000
    assert [c["id"] for c in results["claims"]] == [
        "decay_beats_constant", "warmup_helps_at_high_lr", "cosine_matches_step"]
    for c in results["claims"]:
        assert c["verdict"] in common.VERDICTS and c["measured"] and c["source"]


def _test(constant=0.9, step=0.9, exponential=0.9, cosine=0.9, warmup=0.9, plateau=0.9,
          cos_high=0.9, warm_high=0.9):
    return {"constant": constant, "step": step, "exponential": exponential, "cosine": cosine,
            "warmup_cosine": warmup, "plateau": plateau, "cosine_high": cos_high,
            "warmup_cosine_high": warm_high}


def _verdicts(test):
    return {c["id"]: c["verdict"] for c in exp.claims(test, 10000)}


def test_claim_rules_follow_the_numbers():
    # margin = sqrt(2 * 0.9 * 0.1 / 10000) ~ 0.0042
    v = _verdicts(_test(constant=0.85, cos_high=0.5, warm_high=0.9))
    assert v == {"decay_beats_constant": "confirmed", "warmup_helps_at_high_lr": "confirmed",
                 "cosine_matches_step": "confirmed"}
    v = _verdicts(_test(constant=0.95, cosine=0.8, warm_high=0.8))
    assert v == {"decay_beats_constant": "not confirmed here",
                 "warmup_helps_at_high_lr": "not confirmed here",
                 "cosine_matches_step": "not confirmed here"}
    v = _verdicts(_test(constant=0.85, step=0.9, exponential=0.85, warm_high=0.901))
    assert v["decay_beats_constant"] == "depends"  # exponential ties constant
    assert v["warmup_helps_at_high_lr"] == "depends"  # within the noise margin
    assert v["cosine_matches_step"] == "confirmed"


def test_variant_configs():
    cfg = exp.variant_config(False, "warmup_cosine_high", learning_rate=0.05, epochs=15)
    assert cfg.schedule.name == "cosine" and cfg.schedule.warmup_epochs == 1.0
    assert cfg.optimizer.name == "momentum" and cfg.optimizer.learning_rate == pytest.approx(0.2)
    assert cfg.dataset.name == "fashion_mnist" and cfg.dataset.limit == 20000
    cfg = exp.variant_config(True, "exponential", learning_rate=0.05, epochs=6)
    assert cfg.schedule.decay_rate == pytest.approx(math.log(100) / 6)
    with pytest.raises(ValueError, match="learning_rate must be > 0"):
        exp.run_experiment("/tmp/unused", quick=True, learning_rate=0.0)


def test_cli_without_workdir_exits_2_with_one_line():
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-m", "recipes.experiments.schedules", "--quick"],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "--workdir" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
