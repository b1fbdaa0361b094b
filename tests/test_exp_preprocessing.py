"""recipes.experiments.preprocessing: quick run and the verdict rules."""

import json
import math
import os
import subprocess
import sys

import pytest

from recipes.experiments import common
from recipes.experiments import preprocessing as exp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("preprocessing")
    return workdir, exp.run_experiment(str(workdir), quick=True)


def test_results_json_on_disk_equals_the_returned_dict(run):
    workdir, r = run
    assert json.loads((workdir / "results.json").read_text()) == r
    assert r["experiment"] == "preprocessing" and r["dataset"] == "digits" and r["quick"] is True
    assert r["command"] == "python -m recipes.experiments.preprocessing --workdir=DIR --quick"
    # SGD + momentum, not Adam (whose per-parameter scaling hides the effect).
    assert r["setup"]["config"]["optimizer"]["name"] == "momentum"


def test_every_method_has_finite_numbers_in_range(run):
    _, r = run
    epochs = r["setup"]["epochs"]
    assert list(r["variants"]) == ["none", "mean_image", "per_channel_mean", "standardize",
                                   "pca", "zca"]
    for name, v in r["variants"].items():
        assert v["preprocess"] == name
        for key in ("train_accuracy", "val_accuracy", "test_accuracy"):
            assert 0.0 <= v[key] <= 1.0, (name, key)
        assert len(v["curves"]["loss"]) == len(v["curves"]["val_accuracy"]) == epochs
        assert all(math.isfinite(x) and x > 0 for x in v["curves"]["loss"]), name
        assert v["epochs_to_target"] is None or 1 <= v["epochs_to_target"] <= epochs


def test_the_inputs_differ_as_the_methods_say(run):
    _, r = run
    v = r["variants"]
    assert v["none"]["input_mean"] > 0.1  # raw [0, 1] pixels are not zero-centred
    for name in ("mean_image", "per_channel_mean", "standardize", "pca", "zca"):
        assert abs(v[name]["input_mean"]) < 1e-3, name
    assert v["standardize"]["input_std"] == pytest.approx(1.0, abs=1e-3)
    assert v["pca"]["input_dims"] < v["none"]["input_dims"] == 64  # 99 % of the variance


def test_target_comes_from_the_zero_centred_run(run):
    _, r = run
    k = math.ceil(r["setup"]["epochs"] / 2)
    centred = r["variants"]["mean_image"]
    assert r["setup"]["target_loss"] == centred["curves"]["loss"][k - 1]
    assert centred["epochs_to_target"] <= k


def test_plot_is_written(run):
    workdir, r = run
    assert r["plots"] == ["preprocessing.png"]
    assert (workdir / "preprocessing.png").stat().st_size > 10_000


def test_claims_have_verdicts_recomputable_from_the_numbers(run):
    _, r = run
    assert [c["id"] for c in r["claims"]] == ["zero_centred_converges_faster",
                                              "whitening_not_needed"]
    for c in r["claims"]:
        assert c["verdict"] in common.VERDICTS and "rule:" in c["measured"] and c["source"]
    assert exp.claims(r["variants"], r["setup"]["epochs"]) == r["claims"]


@pytest.mark.parametrize("raw_ep, centred_ep, raw_loss, centred_loss, verdict", [
    (5, 3, 0.5, 0.3, "confirmed"),  # more epochs to the target
    (None, 3, None, 0.3, "confirmed"),  # never got there, diverged
    (2, 3, 0.3, 0.3, "not confirmed here"),  # fewer epochs
    (3, 3, 0.5, 0.3, "confirmed"),  # a tie in epochs, but a much higher final loss
    (3, 3, 0.2, 0.3, "not confirmed here"),  # a tie, and a much lower final loss
    (3, 3, 0.31, 0.3, "depends"),  # a tie at this resolution
    (None, None, 1.0, 1.0, "depends"),
])
def test_centering_verdict(raw_ep, centred_ep, raw_loss, centred_loss, verdict):
    assert exp.centering_verdict(raw_ep, centred_ep, raw_loss, centred_loss, 6) == verdict


@pytest.mark.parametrize("std_acc, white_acc, std_ep, white_ep, verdict", [
    (0.90, {"pca": 0.89, "zca": 0.905}, 3, {"pca": 3, "zca": 4}, "confirmed"),
    (0.90, {"pca": 0.85, "zca": 0.80}, 3, {"pca": None, "zca": 5}, "confirmed"),
    (0.90, {"pca": 0.89, "zca": 0.92}, 3, {"pca": 3, "zca": 3}, "depends"),  # zca +2 points
    (0.90, {"pca": 0.89, "zca": 0.90}, 3, {"pca": 3, "zca": 2}, "depends"),  # zca faster
    (None, {"pca": 0.5, "zca": 0.5}, None, {"pca": None, "zca": None}, "depends"),
])
def test_whitening_verdict(std_acc, white_acc, std_ep, white_ep, verdict):
    assert exp.whitening_verdict(std_acc, white_acc, std_ep, white_ep, 6) == verdict


def test_bad_options_raise_value_error_naming_the_field(tmp_path):
    with pytest.raises(ValueError, match="epochs"):
        exp.run_experiment(str(tmp_path), quick=True, epochs=1)
    with pytest.raises(ValueError, match="limit"):
        exp.run_experiment(str(tmp_path), quick=True, limit=True)


def test_cli_without_workdir_exits_2_with_one_line():
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-m", "recipes.experiments.preprocessing"],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "--workdir" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
