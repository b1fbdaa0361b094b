"""recipes.experiments.common's shared helpers: JSON-safe numbers and the noise-aware verdicts."""

import importlib
import json
import math

import numpy as np
import pytest

from recipes.experiments import common


def test_finite_keeps_numbers_and_maps_non_finite_to_default():
    assert common.finite(3) == 3.0 and isinstance(common.finite(3), float)
    assert common.finite(np.float32(0.5)) == 0.5 and type(common.finite(np.float32(0.5))) is float
    assert common.finite("0.25") == 0.25
    for bad in (math.nan, math.inf, -math.inf, np.float64("nan"), None):
        assert common.finite(bad) is None, bad
        assert common.finite(bad, 0.0) == 0.0, bad
    assert common.finite(0.0, 7.0) == 0.0  # a finite zero is kept, not replaced


def test_finite_list_and_curves_are_json_safe():
    assert common.finite_list([1, math.nan, np.float32(0.5), math.inf, None]) == [
        1.0, None, 0.5, None, None]
    history = {"loss": [2.0, math.nan], "accuracy": [0.5, 0.6], "lr": [0.1, 0.05],
               "other": [1.0]}
    c = common.curves(history)
    assert list(c) == list(common.CURVE_KEYS)
    assert c["loss"] == [2.0, None] and c["val_loss"] == [] and c["accuracy"] == [0.5, 0.6]
    assert list(common.curves(history, ("lr", "loss"))) == ["lr", "loss"]
    assert common.curves(history, ("lr",))["lr"] == [0.1, 0.05]
    json.dumps(c, allow_nan=False)


def _run(loss, accuracy, **summary):
    return {"history": {"loss": loss, "val_loss": loss, "accuracy": accuracy,
                        "val_accuracy": accuracy, "lr": [0.1] * len(loss)},
            "epochs": len(loss), "stopped_reason": "completed", "seconds": 1.5, **summary}


def test_variant_record_final_best_and_diverged_numbers():
    r = common.variant_record(_run([2.0, 0.5, 1.0], [0.3, 0.8, 0.7], train_accuracy=0.7,
                                   val_accuracy=np.float32(0.65), test_accuracy=math.nan))
    assert r["final_loss"] == 1.0 and r["best_loss"] == 0.5
    assert r["final_train_accuracy"] == 0.7
    assert r["train_accuracy"] == 0.7 and r["val_accuracy"] == pytest.approx(0.65)
    assert r["test_accuracy"] is None  # NaN becomes JSON null
    assert r["epochs"] == 3 and r["stopped_reason"] == "completed" and r["seconds"] == 1.5
    assert list(r["curves"]) == list(common.CURVE_KEYS)  # no "lr" in a variant's curves
    json.dumps(r, allow_nan=False)

    diverged = common.variant_record(_run([2.0, math.inf, math.nan], [0.3, 0.1, math.nan]))
    assert diverged["final_loss"] is None and diverged["best_loss"] == 2.0
    assert diverged["final_train_accuracy"] is None
    assert diverged["curves"]["loss"] == [2.0, None, None]
    assert diverged["train_accuracy"] is None  # missing from the summary

    empty = common.variant_record({"history": {}})
    assert empty["final_loss"] is None and empty["best_loss"] is None
    assert empty["curves"]["loss"] == [] and empty["epochs"] is None


def test_noise_margin_and_outcome():
    assert common.noise_margin(0.9, 10000) == pytest.approx(math.sqrt(2 * 0.09 / 10000))
    assert common.noise_margin(1.0, 100) == pytest.approx(0.01)  # at least one example
    assert common.noise_margin(1.5, 0) == pytest.approx(1.0)  # clipped p, at least n = 1
    assert common.outcome([0.05, 0.03], 0.01) == "confirmed"
    assert common.outcome([0.05, 0.0], 0.01) == "depends"
    assert common.outcome([0.0, 0.005], 0.01) == "depends"
    assert common.outcome([-0.05, 0.0], 0.01) == "not confirmed here"
    assert common.outcome([], 0.01) == "depends"
    assert {common.outcome(d, 0.01) for d in ([1], [-1], [0])} == set(common.VERDICTS)


def test_existing_public_api_is_kept():
    for name in ("base_config", "load_splits", "train_variant", "epochs_to", "claim",
                 "command", "finish", "print_claims", "cli_main", "VERDICTS"):
        assert hasattr(common, name), name


@pytest.mark.parametrize("module", ["activations", "preprocessing", "batchnorm", "optimizers",
                                    "schedules", "regularization", "augmentation_tta"])
def test_experiments_use_the_shared_helpers_not_copies(module):
    mod = importlib.import_module(f"recipes.experiments.{module}")
    for old in ("_clean", "_number", "_numbers", "_finite", "_curves", "noise_margin",
                "outcome"):
        assert not hasattr(mod, old), f"{module}.{old} should come from common"
