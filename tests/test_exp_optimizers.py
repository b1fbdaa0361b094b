"""recipes.experiments.optimizers: the quick run, the forgiveness band and the verdict rules."""

import json
import math
import os
import subprocess
import sys

import pytest

from recipes.experiments import common
from recipes.experiments import optimizers as exp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("optimizers")
    return workdir, exp.run_experiment(str(workdir), quick=True)


def test_results_json_on_disk_equals_the_returned_dict(run):
    workdir, results = run
    assert json.loads((workdir / "results.json").read_text()) == results
    assert results["experiment"] == "optimizers" and results["quick"] is True
    assert results["dataset"] == "digits"
    assert results["command"] == "python -m recipes.experiments.optimizers --workdir=DIR --quick"


def test_every_variant_swept_with_finite_numbers(run):
    _, results = run
    variants = results["variants"]
    assert list(variants) == list(exp.NAMES)
    assert results["setup"]["family_rate"] == exp.FAMILY
    for name, v in variants.items():
        lrs = [s["lr"] for s in v["sweep"]]
        if name in exp.FAMILY:  # quick: one run at the family's best rate, no band
            assert lrs == [variants[exp.FAMILY[name]]["best_lr"]]
            assert v["forgiveness_decades"] is None
        else:
            assert lrs == pytest.approx(exp.lr_grid(exp.CENTERS[name], 3, 2.0))
            assert 0.0 <= v["forgiveness_decades"] <= 2.0 + 1e-9
            lo, hi = v["band_lr"]
            assert lrs[0] * 0.999 <= lo <= v["best_lr"] * 1.001 <= hi * 1.002
            assert hi <= lrs[-1] * 1.001
        assert min(abs(v["best_lr"] / lr - 1) for lr in lrs) < 1e-9
        assert v["val_accuracy"] == max(s["val_accuracy"] for s in v["sweep"])
        for key in ("val_accuracy", "test_accuracy", "train_accuracy", "mean_val_accuracy"):
            assert 0.0 <= v[key] <= 1.0 and math.isfinite(v[key]), (name, key)
        assert len(v["history"]["val_accuracy"]) == results["setup"]["epochs"]
        assert all(math.isfinite(x) for x in v["history"]["loss"]), name
    # The digits MLP learns with the right optimizer at its best rate.
    assert max(v["val_accuracy"] for v in variants.values()) > 0.7


def test_switch_runs_momentum_after_adam_at_momentums_best_rate(run):
    _, results = run
    v = results["variants"]
    switch = v["adam_to_momentum"]["switch"]
    assert switch["to"] == "momentum" and switch["learning_rate"] == v["momentum"]["best_lr"]
    assert switch["epoch"] == 1  # 3 quick epochs: Adam for one, then SGD + momentum
    lr = v["adam_to_momentum"]["history"]["lr"]  # the rate actually used per epoch
    assert lr[0] == pytest.approx(v["adam_to_momentum"]["best_lr"])
    assert lr[1:] == pytest.approx([switch["learning_rate"]] * 2)


def test_plot_and_claims(run):
    workdir, results = run
    assert os.path.getsize(workdir / "optimizers.png") > 1000
    ids = [c["id"] for c in results["claims"]]
    assert ids == ["adam_good_default", "adam_forgiving", "momentum_beats_sgd",
                   "adagrad_decays_too_fast"]
    for c in results["claims"]:
        assert c["verdict"] in common.VERDICTS and c["measured"] and c["source"]


def test_forgiveness_interpolates_in_log_lr():
    lrs = [1e-4, 1e-3, 1e-2, 1e-1, 1.0]
    band = exp.forgiveness(lrs, [0.5, 0.9, 0.95, 0.9, 0.1], tolerance=0.01)
    # Crossings of 0.94 one fifth of the way towards each neighbour: 10^-2.2 .. 10^-1.8.
    assert band["width_decades"] == pytest.approx(0.4)
    assert band["low_lr"] == pytest.approx(10 ** -2.2) and band["high_lr"] == pytest.approx(
        10 ** -1.8)
    assert band["best_lr"] == pytest.approx(1e-2) and band["at_edge"] is False
    # A wider plateau, given in descending order: 1e-3 .. 1e-1 are within 0.01 of the best.
    pairs = [(1e-4, 0.5), (1e-3, 0.948), (1e-2, 0.95), (1e-1, 0.945), (1.0, 0.1)][::-1]
    band = exp.forgiveness([p[0] for p in pairs], [p[1] for p in pairs], tolerance=0.01)
    left, right = (0.948 - 0.94) / (0.948 - 0.5), (0.945 - 0.94) / (0.945 - 0.1)
    assert band["width_decades"] == pytest.approx(2 + left + right)
    assert band["low_lr"] == pytest.approx(10 ** (-3 - left))


def test_forgiveness_flat_sweep_reaches_the_edges_and_nan_counts_as_zero():
    band = exp.forgiveness([1e-3, 1e-2, 1e-1], [0.9, 0.9, 0.9])
    assert band["width_decades"] == pytest.approx(2.0) and band["at_edge"] is True
    band = exp.forgiveness([1e-3, 1e-2, 1e-1], [0.9, 0.8, float("nan")])
    assert band["best_lr"] == pytest.approx(1e-3) and band["at_edge"] is True
    assert band["width_decades"] == pytest.approx(0.1)  # 0.89 is 1/10 of the way to 0.8
    with pytest.raises(ValueError, match="one accuracy per learning rate"):
        exp.forgiveness([1e-3, 1e-2], [0.9])


def _variant(val, mean_val, width, loss=(2.0, 1.0, 0.5, 0.4)):
    return {"val_accuracy": val, "mean_val_accuracy": mean_val, "forgiveness_decades": width,
            "band_at_edge": False, "history": {"loss": list(loss)}}


def _synthetic(adam_width, sgd_width, momentum_val=0.9):
    return {"sgd": _variant(0.85, 0.80, sgd_width), "momentum": _variant(momentum_val, 0.85, 1),
            "nesterov": _variant(momentum_val, 0.85, 1), "adagrad": _variant(0.9, 0.85, 1),
            "rmsprop": _variant(0.9, 0.85, 1), "adam": _variant(0.9, 0.88, adam_width)}


def test_claim_rules_follow_the_numbers():
    by_id = {c["id"]: c["verdict"] for c in exp.claims(_synthetic(1.5, 0.5), 10000)}
    assert by_id["adam_forgiving"] == "confirmed"
    assert by_id["adam_good_default"] == "confirmed"
    assert by_id["momentum_beats_sgd"] == "confirmed"
    by_id = {c["id"]: c["verdict"] for c in exp.claims(_synthetic(0.5, 1.5, 0.8), 10000)}
    assert by_id["adam_forgiving"] == "not confirmed here"
    assert by_id["momentum_beats_sgd"] == "not confirmed here"
    by_id = {c["id"]: c["verdict"] for c in exp.claims(_synthetic(1.1, 1.0), 10000)}
    assert by_id["adam_forgiving"] == "depends"  # within WIDTH_RESOLUTION
    slow = _synthetic(1, 1)
    slow["adam"] = _variant(0.8, 0.7, 1)
    assert exp.claims(slow, 10000)[0]["verdict"] == "not confirmed here"


def test_adagrad_rule():
    assert exp.late_progress([2.0, 1.0, 0.5]) == pytest.approx(0.5 / 1.5)
    assert exp.late_progress([1.0, 1.0, 1.0]) == 0.0
    stalls = _variant(0.80, 0.8, 1, loss=(2.0, 1.0, 0.98, 0.97))
    keeps = _variant(0.90, 0.8, 1, loss=(2.0, 1.0, 0.6, 0.3))
    assert exp.adagrad_claim(stalls, keeps, 10000)["verdict"] == "confirmed"
    assert exp.adagrad_claim(keeps, stalls, 10000)["verdict"] == "not confirmed here"
    stalls_as_good = dict(stalls, val_accuracy=0.90)  # stalls, but ends as well: undecided
    assert exp.adagrad_claim(stalls_as_good, keeps, 10000)["verdict"] == "depends"


def test_bad_names_raise():
    with pytest.raises(ValueError, match="not variants"):
        exp.run_experiment("/tmp/unused", quick=True, names=("lion",))


def test_cli_without_workdir_exits_2_with_one_line():
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-m", "recipes.experiments.optimizers", "--quick"],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "--workdir" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
