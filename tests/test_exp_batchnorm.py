"""recipes.experiments.batchnorm: quick run and the verdict rules."""

import json
import math
import os
import subprocess
import sys

import pytest

from recipes.experiments import batchnorm, common

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MLP = ["nobn_lr0.01", "nobn_lr0.03", "nobn_x30", "bn_x1", "bn_x5", "bn_x30",
       "bn_after_x1"]
RESNETS = [f"resnet_{v}" for v in "abcde"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("batchnorm")
    return workdir, batchnorm.run_experiment(str(workdir), quick=True)


def test_results_json_on_disk_equals_the_returned_dict(run):
    workdir, r = run
    assert json.loads((workdir / "results.json").read_text()) == r
    assert r["experiment"] == "batchnorm" and r["dataset"] == "digits" and r["quick"] is True
    assert r["command"] == "python -m recipes.experiments.batchnorm --workdir=DIR --quick"


def test_every_variant_present_with_numbers_in_range(run):
    _, r = run
    v = r["variants"]
    assert list(v) == MLP + RESNETS
    for name, x in v.items():
        for key in ("train_accuracy", "val_accuracy", "test_accuracy"):
            assert 0.0 <= x[key] <= 1.0, (name, key)
        planned = r["setup"]["mlp_epochs" if x["arch"] == "mlp" else "resnet_epochs"]
        assert 1 <= len(x["curves"]["loss"]) == x["epochs"] <= planned
        if x["stopped_reason"] == "completed":
            assert x["epochs"] == planned
            assert all(math.isfinite(y) and y > 0 for y in x["curves"]["loss"]), name
        else:  # only a diverged run may stop early, and its NaN is stored as null
            assert x["stopped_reason"] == "nan/inf loss" and x["curves"]["loss"][-1] is None
        if x["arch"] == "mlp":
            assert x["epochs_to_target"] is None or 1 <= x["epochs_to_target"] <= planned


def test_variants_have_the_settings_their_names_say(run):
    _, r = run
    v, base = r["variants"], r["setup"]["baseline_lr"]
    assert r["setup"]["sweep"] == list(batchnorm.QUICK_SWEEP)
    assert r["setup"]["baseline"] in MLP[:2]
    assert base == v[r["setup"]["baseline"]]["learning_rate"] in batchnorm.QUICK_SWEEP
    # The baseline is the sweep's best by validation accuracy.
    assert v[r["setup"]["baseline"]]["val_accuracy"] == max(v[n]["val_accuracy"] for n in MLP[:2])
    for f in batchnorm.FACTORS:
        assert v[f"bn_x{f}"]["learning_rate"] == pytest.approx(base * f)
        assert v[f"bn_x{f}"]["norm"] == "batch"
        assert v[f"bn_x{f}"]["norm_position"] == "before_activation"
    assert v["nobn_x30"]["learning_rate"] == pytest.approx(base * 30)
    assert v["nobn_x30"]["norm"] == "none"
    assert v["bn_after_x1"]["norm_position"] == "after_activation"
    for n in RESNETS:
        assert v[n]["arch"] == "resnet" and v[n]["variant"] == n[-1] and v[n]["norm"] == "batch"
    # The baseline reaches its own final training accuracy by its last epoch at the latest.
    assert v[r["setup"]["baseline"]]["epochs_to_target"] is not None


def test_plot_is_written(run):
    workdir, r = run
    assert r["plots"] == ["batchnorm.png"]
    assert (workdir / "batchnorm.png").stat().st_size > 10_000


def test_claims_have_verdicts_recomputable_from_the_numbers(run):
    _, r = run
    assert [c["id"] for c in r["claims"]] == ["bn_allows_higher_lr", "bn_speeds_up_training",
                                              "bn_position_small_difference",
                                              "resnet_full_preactivation_best"]
    for c in r["claims"]:
        assert c["verdict"] in common.VERDICTS and "rule:" in c["measured"] and c["source"]
    assert batchnorm.claims(r["variants"], r["setup"]["baseline"],
                            r["setup"]["mlp_epochs"]) == r["claims"]


@pytest.mark.parametrize("no_bn, bn, verdict", [
    (None, 0.93, "confirmed"),  # plain net diverged, BN within 5 points
    (0.50, 0.91, "confirmed"),  # plain net 45 points down
    (0.93, 0.94, "not confirmed here"),  # the plain net trains too
    (None, 0.60, "not confirmed here"),  # BN fails as well
    (None, None, "not confirmed here"),
    (0.80, 0.85, "depends"),  # both in between
])
def test_higher_lr_verdict(no_bn, bn, verdict):
    assert batchnorm.higher_lr_verdict(0.95, no_bn, bn) == verdict


@pytest.mark.parametrize("baseline, bn, verdict", [
    (5, {"bn_x1": 4, "bn_x5": 2, "bn_x30": None}, "confirmed"),
    (None, {"bn_x1": 5, "bn_x5": None, "bn_x30": None}, "confirmed"),
    (3, {"bn_x1": 3, "bn_x5": 4, "bn_x30": None}, "depends"),
    (2, {"bn_x1": 3, "bn_x5": 4, "bn_x30": 5}, "not confirmed here"),
    (5, {"bn_x1": None, "bn_x5": None, "bn_x30": None}, "not confirmed here"),
])
def test_speedup_verdict(baseline, bn, verdict):
    assert batchnorm.speedup_verdict(baseline, bn, 5) == verdict


@pytest.mark.parametrize("before, after, verdict", [
    (0.90, 0.905, "confirmed"), (0.90, 0.88, "depends"), (0.90, 0.80, "not confirmed here"),
    (None, 0.9, "not confirmed here"),
])
def test_position_verdict(before, after, verdict):
    assert batchnorm.position_verdict(before, after) == verdict


@pytest.mark.parametrize("scores, verdict", [
    ({"a": 0.80, "b": 0.78, "e": 0.82}, "confirmed"),
    ({"a": 0.825, "b": 0.78, "e": 0.82}, "depends"),
    ({"a": 0.90, "b": 0.78, "e": 0.82}, "not confirmed here"),
    ({"a": 0.90, "b": 0.78, "e": None}, "not confirmed here"),
])
def test_best_verdict(scores, verdict):
    assert batchnorm.best_verdict("e", scores) == verdict


def test_bad_options_raise_value_error_naming_the_field(tmp_path):
    with pytest.raises(ValueError, match="epochs"):
        batchnorm.run_experiment(str(tmp_path), quick=True, epochs=1)
    with pytest.raises(ValueError, match="limit"):
        batchnorm.run_experiment(str(tmp_path), quick=True, limit=50)


def test_cli_without_workdir_exits_2_with_one_line():
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-m", "recipes.experiments.batchnorm", "--quick"],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "--workdir" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
