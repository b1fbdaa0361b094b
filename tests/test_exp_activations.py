"""recipes.experiments.activations: quick run, the dead-unit measurement, the verdict rules."""

import json
import math
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import models
from recipes.experiments import activations, common

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("activations")
    return workdir, activations.run_experiment(str(workdir), quick=True)


def test_results_json_on_disk_equals_the_returned_dict(run):
    workdir, r = run
    assert json.loads((workdir / "results.json").read_text()) == r
    assert r["experiment"] == "activations" and r["dataset"] == "digits" and r["quick"] is True
    assert r["command"] == "python -m recipes.experiments.activations --workdir=DIR --quick"


def test_every_activation_has_finite_numbers_in_range(run):
    _, r = run
    epochs = r["setup"]["epochs"]
    assert list(r["variants"]) == list(activations.ACTIVATIONS)
    for name, v in r["variants"].items():
        assert v["init"] == ("xavier" if name in ("sigmoid", "tanh") else "he")
        for key in ("train_accuracy", "val_accuracy", "test_accuracy"):
            assert 0.0 <= v[key] <= 1.0, (name, key)
        assert len(v["curves"]["loss"]) == len(v["curves"]["val_accuracy"]) == epochs
        assert all(math.isfinite(x) and x > 0 for x in v["curves"]["loss"]), name
        assert 0.0 <= v["dead"] <= 1.0 and 0.0 <= v["saturated"] <= 1.0
        assert len(v["layers"]) == 4 and v["probe_examples"] > 0
        assert v["epochs_to_target"] is None or 1 <= v["epochs_to_target"] <= epochs
    # Saturation is only defined for sigmoid/tanh; deadness only for the rectifiers.
    for name in ("relu", "leaky_relu", "elu", "gelu", "maxout"):
        assert r["variants"][name]["saturated"] == 0.0
    assert r["variants"]["sigmoid"]["dead"] == 0.0 and r["variants"]["tanh"]["dead"] == 0.0


def test_target_is_relus_loss_at_a_third_of_the_epochs(run):
    _, r = run
    k = math.ceil(r["setup"]["epochs"] / 3)
    relu = r["variants"]["relu"]
    assert r["setup"]["target_loss"] == relu["curves"]["loss"][k - 1]
    assert relu["epochs_to_target"] <= k
    for v in r["variants"].values():
        e = v["epochs_to_target"]
        if e is not None:  # the first epoch at or below the target, not a later one
            assert v["curves"]["loss"][e - 1] <= r["setup"]["target_loss"]
            assert all(x > r["setup"]["target_loss"] for x in v["curves"]["loss"][:e - 1])


def test_plot_is_written(run):
    workdir, r = run
    assert r["plots"] == ["activations.png"]
    assert (workdir / "activations.png").stat().st_size > 10_000


def test_claims_have_verdicts_recomputable_from_the_numbers(run):
    _, r = run
    ids = [c["id"] for c in r["claims"]]
    assert ids == ["relu_faster_than_sigmoid_tanh", "never_use_sigmoid",
                   "relu_10_20_percent_dead", "leaky_elu_maxout_dont_die"]
    for c in r["claims"]:
        assert c["verdict"] in common.VERDICTS and c["measured"] and c["source"]
        assert "rule:" in c["measured"]
    assert activations.claims(r["variants"], r["setup"]["epochs"]) == r["claims"]


def test_dead_units_are_measured_for_relu_and_maxout():
    x = np.random.default_rng(0).standard_normal((64, 6)).astype("float32")
    for act, layer in (("relu", "dense_0"), ("maxout", "dense_0")):
        keras.utils.set_random_seed(0)
        model = models.build({"hidden": (8, 8), "activation": act}, (6,), 3)
        dense = model.get_layer(layer)
        kernel, bias = dense.get_weights()
        dense.set_weights([kernel * 0.0, bias * 0.0 - 1.0])  # every unit of layer 1 at -1
        stats = activations.unit_stats(model, x, act)
        assert stats["layers"][0]["dead"] == 1.0
        assert stats["dead"] >= 0.5  # unit-weighted: 8 of the 16 units at least
        assert stats["probe_examples"] == 64


@pytest.mark.parametrize("reference, others, verdict", [
    (2, {"sigmoid": None, "tanh": 5}, "confirmed"),  # never (7) and 5 are >= 2x of 2
    (2, {"sigmoid": None, "tanh": 3}, "depends"),  # tanh only 1.5x slower
    (2, {"sigmoid": None, "tanh": 2}, "not confirmed here"),  # tanh as fast
    (3, {"sigmoid": 2, "tanh": 6}, "not confirmed here"),  # sigmoid faster
    (None, {"sigmoid": 2, "tanh": 2}, "not confirmed here"),  # relu never got there
])
def test_speedup_verdict(reference, others, verdict):
    assert activations.speedup_verdict(reference, others, 6)[0] == verdict


def test_speedup_ratios_count_never_as_one_more_epoch():
    _, ratios = activations.speedup_verdict(2, {"sigmoid": None, "tanh": 4}, 6)
    assert ratios == {"sigmoid": 3.5, "tanh": 2.0}


def test_worst_verdict():
    loss = {"sigmoid": 2.3, "tanh": 0.4, "relu": 0.2}
    acc = {"sigmoid": 0.1, "tanh": 0.9, "relu": 0.95}
    assert activations.worst_verdict("sigmoid", loss, acc) == "confirmed"
    assert activations.worst_verdict("sigmoid", loss, {**acc, "tanh": 0.05}) == "depends"
    assert activations.worst_verdict("sigmoid", {**loss, "relu": None},
                                     {**acc, "relu": 0.0}) == "not confirmed here"
    # Within the tie tolerance of the lowest accuracy still counts as lowest.
    assert activations.worst_verdict("sigmoid", loss, {**acc, "tanh": 0.097}) == "confirmed"


@pytest.mark.parametrize("dead, verdict", [
    (0.15, "confirmed"), (0.05, "confirmed"), (0.30, "confirmed"),
    (0.0, "depends"), (0.04, "depends"), (0.5, "depends"),
])
def test_dead_band_verdict(dead, verdict):
    assert activations.dead_band_verdict(dead) == verdict


@pytest.mark.parametrize("relu, others, verdict", [
    (0.12, {"leaky_relu": 0.0, "elu": 0.01, "maxout": 0.0}, "confirmed"),
    (0.01, {"leaky_relu": 0.0, "elu": 0.0, "maxout": 0.0}, "depends"),
    (0.12, {"leaky_relu": 0.10, "elu": 0.0, "maxout": 0.0}, "not confirmed here"),
])
def test_no_dead_verdict(relu, others, verdict):
    assert activations.no_dead_verdict(relu, others) == verdict


def test_bad_options_raise_value_error_naming_the_field(tmp_path):
    with pytest.raises(ValueError, match="epochs"):
        activations.run_experiment(str(tmp_path), quick=True, epochs=2)
    with pytest.raises(ValueError, match="limit"):
        activations.run_experiment(str(tmp_path), quick=True, limit=10)


def test_cli_without_workdir_exits_2_with_one_line():
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-m", "recipes.experiments.activations", "--quick"],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "--workdir" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
