"""recipes.experiments.augmentation_tta: the quick run, grey→RGB and the verdict rules."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from recipes import data
from recipes.experiments import augmentation_tta as exp
from recipes.experiments import common

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("augmentation_tta")
    return workdir, exp.run_experiment(str(workdir), quick=True)


def test_results_json_on_disk_equals_the_returned_dict(run):
    workdir, results = run
    assert json.loads((workdir / "results.json").read_text()) == results
    assert results["experiment"] == "augmentation_tta" and results["quick"] is True
    assert results["dataset"] == "digits"
    assert results["command"] == ("python -m recipes.experiments.augmentation_tta "
                                  "--workdir=DIR --quick")
    assert results["setup"]["input_shape"] == [8, 8, 3]


def test_every_variant_tested_on_center_and_ten_crops(run):
    _, results = run
    assert list(results["variants"]) == list(exp.NAMES)
    for name, v in results["variants"].items():
        for key in ("train_accuracy", "val_accuracy", "test_accuracy", "test_ten_crop_accuracy"):
            assert 0.0 <= v[key] <= 1.0 and math.isfinite(v[key]), (name, key)
        assert v["ten_crop_gain"] == pytest.approx(v["test_ten_crop_accuracy"]
                                                   - v["test_accuracy"])
        assert v["gap"] == pytest.approx(v["train_accuracy"] - v["val_accuracy"])
        assert len(v["history"]["val_accuracy"]) == results["setup"]["epochs"]
    v = results["variants"]
    assert v["none"]["augment"] == {}
    assert v["crop_flip"]["augment"] == {"crop_size": 7, "flip": "horizontal"}
    assert v["randaugment"]["augment"] == {"randaugment": 2}
    assert v["mixup"]["augment"] == {"mixup": 0.2} and v["cutmix"]["augment"] == {"cutmix": 1.0}
    assert v["none"]["test_accuracy"] > 0.6


def test_crop_model_sees_crops_and_full_image_models_see_the_image(run):
    workdir, _ = run
    import keras

    for name, side in (("crop_flip", 7), ("none", 8), ("mixup", 8)):
        model = keras.saving.load_model(str(workdir / name / "model.keras"))
        assert tuple(model.input_shape[1:]) == (side, side, 3), name
        summary = json.loads((workdir / name / "summary.json").read_text())
        assert summary["tta_mode"] == "ten_crop"


def test_plot_and_claims(run):
    workdir, results = run
    assert os.path.getsize(workdir / "augmentation_tta.png") > 1000
    assert [c["id"] for c in results["claims"]] == [
        "augmentation_reduces_overfitting", "ten_crop_adds_accuracy", "mixup_cutmix_help"]
    for c in results["claims"]:
        assert c["verdict"] in common.VERDICTS and c["measured"] and c["source"]


def test_rgb_repeats_grey_channels_and_keeps_rgb():
    x = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4, 1)
    split = data.Split(x, np.array([0, 1]))
    info = data.DatasetInfo("toy", 2, (4, 4, 1), ("a", "b"), "test")
    out = exp.rgb(data.Splits(split, split, split, info))
    assert out.train.x.shape == (2, 4, 4, 3) and out.info.input_shape == (4, 4, 3)
    assert np.array_equal(out.test.x[..., 2], x[..., 0]) and out.info.name == "toy"
    assert exp.rgb(out) is out


def test_augmentation_rule():
    base = {"test_accuracy": 0.85, "gap": 0.10}
    up = {"test_accuracy": 0.88, "gap": 0.09}  # test up by more than the margin
    closer = {"test_accuracy": 0.85, "gap": 0.02}  # same test, much smaller gap
    worse = {"test_accuracy": 0.80, "gap": 0.01}  # smaller gap, but test down
    flat = {"test_accuracy": 0.851, "gap": 0.099}
    assert exp.augmentation_verdict(base, {"a": up, "b": closer}, 0.01, 0.01) == "confirmed"
    assert exp.augmentation_verdict(base, {"a": up, "b": worse}, 0.01, 0.01) == "depends"
    assert exp.augmentation_verdict(base, {"a": worse, "b": flat}, 0.01, 0.01) == (
        "not confirmed here")


def test_tta_threshold_and_claims_on_synthetic_numbers():
    assert exp.tta_threshold(10000) == pytest.approx(0.001)
    assert exp.tta_threshold(360) == pytest.approx(2 / 360)

    def v(test, tta=None, gap=0.05):
        tta = test if tta is None else tta
        return {"test_accuracy": test, "test_ten_crop_accuracy": tta, "ten_crop_gain": tta - test,
                "gap": gap, "val_accuracy": test}

    variants = {"none": v(0.85, 0.84, gap=0.1), "crop_flip": v(0.88, 0.885, gap=0.02),
                "randaugment": v(0.87), "mixup": v(0.87), "cutmix": v(0.88)}
    assert [c["verdict"] for c in exp.claims(variants, 2000, 10000)] == [
        "confirmed", "confirmed", "confirmed"]
    variants.update(crop_flip=v(0.88, 0.8805), mixup=v(0.80), cutmix=v(0.85))
    assert [c["verdict"] for c in exp.claims(variants, 2000, 10000)][1:] == [
        "depends", "not confirmed here"]
    variants.update(crop_flip=v(0.88, 0.87))
    assert exp.claims(variants, 2000, 10000)[1]["verdict"] == "not confirmed here"


def test_unknown_variant_raises():
    with pytest.raises(ValueError, match="augmentation variant"):
        exp.variant_config(True, "autoaugment", epochs=1)


def test_cli_without_workdir_exits_2_with_one_line():
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-m", "recipes.experiments.augmentation_tta",
                           "--quick"], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=300)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "--workdir" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
