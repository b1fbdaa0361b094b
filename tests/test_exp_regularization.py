"""recipes.experiments.regularization: the quick run, weight noisiness and the verdict rules."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from recipes.experiments import common
from recipes.experiments import regularization as exp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("regularization")
    return workdir, exp.run_experiment(str(workdir), quick=True)


def test_results_json_on_disk_equals_the_returned_dict(run):
    workdir, results = run
    assert json.loads((workdir / "results.json").read_text()) == results
    assert results["experiment"] == "regularization" and results["quick"] is True
    assert results["dataset"] == "digits"
    assert results["command"] == ("python -m recipes.experiments.regularization --workdir=DIR "
                                  "--quick")


def test_every_variant_has_finite_numbers_in_range(run):
    _, results = run
    assert list(results["variants"]) == [n for n in exp.VARIANTS if n not in exp.QUICK_SKIP]
    for name, v in results["variants"].items():
        for key in ("train_accuracy", "val_accuracy", "test_accuracy"):
            assert 0.0 <= v[key] <= 1.0, (name, key)
        assert v["gap"] == pytest.approx(v["train_accuracy"] - v["val_accuracy"])
        assert 0.0 < v["weight_noisiness"] < 2.0 and math.isfinite(v["weight_noisiness"])
        assert len(v["history"]["val_accuracy"]) == results["setup"]["epochs"]
        assert all(x is not None for x in v["history"]["loss"])
    assert results["variants"]["l2_1e-02"]["changes"] == {"model.l2": 0.01}
    assert results["variants"]["batchnorm_dropout_0.5"]["changes"] == {
        "model.norm": "batch", "model.dropout": 0.5}
    assert results["variants"]["none"]["val_accuracy"] > 0.7


def test_each_variant_trained_with_its_setting(run):
    workdir, _ = run
    cfg = json.loads((workdir / "dropout_0.5" / "config.json").read_text())
    assert cfg["model"]["dropout"] == 0.5 and cfg["model"]["l2"] == 0.0
    cfg = json.loads((workdir / "label_smoothing_0.1" / "config.json").read_text())
    assert cfg["loss"]["label_smoothing"] == 0.1
    cfg = json.loads((workdir / "input_noise_0.1" / "config.json").read_text())
    assert cfg["augment"]["noise_std"] == 0.1


def test_plots_and_claims(run):
    workdir, results = run
    for name in ("regularization.png", "regularization_weights.png"):
        assert os.path.getsize(workdir / name) > 1000, name
    assert [c["id"] for c in results["claims"]] == [
        "regularization_shrinks_gap", "noisy_weights_mean_weak_regularization",
        "dropout_with_batchnorm_can_hurt"]
    for c in results["claims"]:
        assert c["verdict"] in common.VERDICTS and c["measured"] and c["source"]


def test_noisiness_white_noise_vs_smooth_templates():
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((28 * 28, 64))
    assert exp.noisiness(noise, (28, 28, 1)) == pytest.approx(exp.WHITE_NOISE_TV, rel=0.02)
    yy, xx = np.mgrid[0:28, 0:28] / 27.0
    smooth = np.stack([np.sin(3 * xx + k) * np.cos(2 * yy) for k in range(64)], -1)
    smooth = smooth.reshape(28 * 28, 64)
    assert exp.noisiness(smooth, (28, 28)) < 0.2
    # Scale-free: shrinking the weights (what L2 does to noise too) changes nothing.
    assert exp.noisiness(0.01 * noise, (28, 28)) == pytest.approx(exp.noisiness(noise, (28, 28)))
    # Noise on top of a template: in between, rising with the noise.
    a = exp.noisiness(smooth + 0.1 * noise, (28, 28))
    b = exp.noisiness(smooth + 1.0 * noise, (28, 28))
    assert exp.noisiness(smooth, (28, 28)) < a < b < exp.noisiness(noise, (28, 28))
    assert exp.noisiness(np.ones((16, 3)), (4, 4)) == 0.0
    with pytest.raises(ValueError, match="kernel"):
        exp.noisiness(noise, (8, 8))


def test_gap_rule():
    m = 0.01
    assert exp.gap_verdict(0.10, {"a": 0.05, "b": 0.02, "c": 0.095}, m) == "confirmed"
    assert exp.gap_verdict(0.10, {"a": 0.05, "b": 0.02, "c": 0.15}, m) == "depends"
    assert exp.gap_verdict(0.10, {"a": 0.05, "b": 0.10, "c": 0.095}, m) == "depends"
    assert exp.gap_verdict(0.10, {"a": 0.10, "b": 0.12}, m) == "not confirmed here"


def test_noisy_weights_rule():
    weak = {"weight_noisiness": 1.0, "gap": 0.10}
    assert exp.noisy_weights_verdict(weak, {"weight_noisiness": 0.5, "gap": 0.02}) == "confirmed"
    assert exp.noisy_weights_verdict(weak, {"weight_noisiness": 0.9, "gap": 0.02}) == "depends"
    assert exp.noisy_weights_verdict(weak, {"weight_noisiness": 0.5, "gap": 0.2}) == "depends"
    assert exp.noisy_weights_verdict(
        weak, {"weight_noisiness": 1.1, "gap": 0.0}) == "not confirmed here"


def test_bn_dropout_rule_and_claims_on_synthetic_numbers():
    assert exp.bn_dropout_verdict(0.90, 0.85, 0.01) == "confirmed"
    assert exp.bn_dropout_verdict(0.90, 0.895, 0.01) == "depends"
    assert exp.bn_dropout_verdict(0.85, 0.90, 0.01) == "not confirmed here"

    def v(gap, test=0.88, noise=1.0):
        return {"gap": gap, "val_accuracy": 0.88, "test_accuracy": test,
                "weight_noisiness": noise}

    variants = {name: v(0.02) for name in exp.VARIANTS if name not in exp.QUICK_SKIP}
    variants["none"] = v(0.15)
    variants[exp.WEAK_L2] = v(0.14, noise=1.0)
    variants[exp.STRONG_L2] = v(0.03, noise=0.4)
    variants["batchnorm"] = v(0.1, test=0.90)
    variants["batchnorm_dropout_0.5"] = v(0.0, test=0.86)
    verdicts = [c["verdict"] for c in exp.claims(variants, 5000, 10000)]
    assert verdicts == ["confirmed", "confirmed", "confirmed"]
    variants["batchnorm_dropout_0.5"] = v(0.0, test=0.92)
    assert exp.claims(variants, 5000, 10000)[2]["verdict"] == "not confirmed here"


def test_cli_without_workdir_exits_2_with_one_line():
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-m", "recipes.experiments.regularization",
                           "--quick"], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=300)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "--workdir" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
