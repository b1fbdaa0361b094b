"""babysit on the user's own run (fit=): checks, the run as given, diagnosis, repairs, verdict."""

import json

import keras
import numpy as np
import pytest
from sklearn.datasets import load_digits

from recipes import babysit, causes, configs, preflight, repair, train
from recipes.callbacks.stuck import StopWhenFlat, chance_bound
from tuning import hypermodel, space

FIT = {"epochs": 6, "batch_size": 32}


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    x = (d.data / 16.0).astype("float32")
    y = d.target.astype("int64")
    return x[:900], y[:900], x[900:1300], y[900:1300]


def mlp(lr=1e-3, units=10, out="softmax", loss="sparse_categorical_crossentropy"):
    def build():
        m = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, activation="relu"),
                              keras.layers.Dense(units, activation=out)])
        m.compile(optimizer=keras.optimizers.Adam(lr), loss=loss, metrics=["accuracy"])
        return m
    return build


def quiet(lines):
    return lines.append


def test_as_given_takes_fit_and_leaves_the_data_alone():
    tree = babysit.as_given(None, {"epochs": 7, "batch_size": 16, "validation_split": 0.2},
                            users_data=True)
    assert tree["train"] == {"epochs": 7, "batch_size": 16, "verbose": 0,
                             "restore_best": False, "prior_bias": False}
    assert tree["dataset"] == {"val_size": 0.2, "preprocess": "none"}
    # a field the config names stays; fit= is the user's word and wins over the config
    tree = babysit.as_given({"train": {"restore_best": True, "epochs": 3}}, {"epochs": 5},
                            users_data=False)
    assert tree["train"]["restore_best"] is True and tree["train"]["epochs"] == 5
    assert "dataset" not in tree


@pytest.mark.parametrize("fit, match", [({"epoch": 3}, "fit: epoch not supported"),
                                        ([3], "give a dict")])
def test_bad_fit_names_the_key_and_the_fix(fit, match, tmp_path, digits):
    with pytest.raises(ValueError, match=match):
        babysit.run(None, str(tmp_path / "w"), model=mlp(), data=digits, fit=fit)
    assert not (tmp_path / "w").exists()


def test_a_too_high_learning_rate_is_found_named_repaired_and_proved(digits, tmp_path,
                                                                    monkeypatch):
    lines, calls, real = [], [], train.test_scores
    monkeypatch.setattr(train, "test_scores", lambda p: calls.append(1) or real(p))
    result = babysit.run(None, str(tmp_path / "w"), model=mlp(lr=0.5), data=digits,
                         fit=FIT, echo=quiet(lines))
    assert calls == [1]  # the test split is read once, on the final model
    assert [s["name"] for s in result["steps"]] == [
        "checks before training", "train", "diagnosis", "repair", "report"]
    top = result["findings"][0]
    assert top["cause"] == "learning_rate_too_high" and top["severity"] in ("error", "warning")
    assert top["remedy"]["change"] == {"optimizer.learning_rate": 0.05}
    assert top["remedy"]["flags"] == "--config.optimizer.learning_rate=0.05"
    row = result["repairs"][0]
    assert (row["round"], row["cause"], row["kept"]) == (1, "learning_rate_too_high", True)
    assert row["val_accuracy_after"] > row["val_accuracy_before"] + 0.3
    final = result["final"]
    assert final["test_accuracy"] > 0.85
    assert final["changes"]["optimizer.learning_rate"] <= 0.05
    assert final["as_given_seconds"] > 0 and final["seconds"] >= final["as_given_seconds"]
    verdict = result["verdict"][0]
    assert verdict.startswith("test accuracy 0.") and "learning_rate_too_high" in verdict
    assert "points" in verdict
    assert any(line.startswith("verdict: test accuracy") for line in lines)  # the closing block
    saved = json.loads((tmp_path / "w" / "babysit.json").read_text())
    assert {"findings", "repairs", "final", "verdict"} <= set(saved)
    assert (tmp_path / "w" / "final.keras").exists()
    assert "Repairs" in (tmp_path / "w" / "report.html").read_text()


def test_a_healthy_program_is_not_repaired(digits, tmp_path):
    result = babysit.run(None, str(tmp_path / "w"), model=mlp(), data=digits,
                         fit={"epochs": 15, "batch_size": 32}, echo=quiet([]))
    serious = [f for f in result["findings"] if f["severity"] != "info"
               and not f["explained_by"]]
    assert serious == [], serious
    assert result["repairs"] == []
    assert result["verdict"][0].endswith("no problems found")
    assert result["final"]["seconds"] == result["final"]["as_given_seconds"]


def test_a_network_too_broken_to_start_gets_first_aid(digits, tmp_path):
    # 5 output units for 10 classes: Keras raises, prepare refuses; the checks name it.
    result = babysit.run(None, str(tmp_path / "w"), model=mlp(units=5), data=digits,
                         fit=FIT, echo=quiet([]))
    first = result["repairs"][0]
    assert (first["round"], first["cause"], first["transform"]) == (
        0, "output_loss_mismatch", "fix_output")
    assert first["val_accuracy_before"] is None  # NaN in memory, null in JSON
    assert "could not start" in first["note"]
    assert result["final"]["test_accuracy"] > 0.8


def test_the_users_model_object_is_never_touched(digits, tmp_path):
    model = mlp(lr=0.5)()
    before = [w.copy() for w in model.get_weights()]
    babysit.run(None, str(tmp_path / "w"), model=model, data=digits, fit=FIT, echo=quiet([]))
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(0.5)


def _attempt(val, seconds=1.0, epochs=5):
    a = repair.Attempt("x", configs.get("base"), None, None, "")
    a.summary = {"val_accuracy": val, "fit_seconds": seconds, "epochs": epochs,
                 "epochs_planned": epochs}
    return a


def test_the_loop_keeps_only_improvements_and_respects_its_budget(tmp_path):
    base = _attempt(0.5)
    base.findings = [causes.Finding("diverged", "error", "1", "a",
                                    cause="learning_rate_too_high",
                                    remedies=causes.remedies("learning_rate_too_high"))]
    lines = []
    best, rows = repair.loop(base, root=str(tmp_path), rounds=2, budget=0.0,
                             users_model=True, num_classes=10, multilabel=False,
                             echo=lines.append)
    assert best is base and rows == []
    assert sum("skipped" in line for line in lines) == 3  # ÷10, the range test, ÷100


def test_a_stopped_run_is_scaled_to_its_planned_epochs():
    a = _attempt(0.1, seconds=2.0, epochs=1)
    a.summary["epochs_planned"] = 10
    assert a.planned_fit_seconds == pytest.approx(20.0)


def test_relabeled_maps_scaled_ids_back_consistently():
    y = np.array([0, 3, 9, 3]) / 255.0
    x = np.zeros((4, 2))
    out = preflight.relabel_splits((x, y, x, y[::-1]))
    assert out[1].tolist() == [0, 1, 2, 1] and out[3].tolist() == [1, 2, 1, 0]


def test_search_trials_see_the_final_schedule_compressed_to_their_length():
    cfg = configs.get("digits_mlp")
    cfg.schedule.name, cfg.schedule.step_epochs, cfg.schedule.warmup_epochs = "step", 10, 3.0
    model = hypermodel.ConfigHyperModel(cfg, space.from_mapping(
        "optimizer.learning_rate=log:1e-4:1e-1", cfg), epochs=3)
    trial = model.config_for({"optimizer.learning_rate": 1e-3})
    assert (trial.train.epochs, trial.schedule.step_epochs) == (3, 1)
    assert trial.schedule.warmup_epochs == pytest.approx(0.3)
    assert hypermodel.compressed_schedule(cfg, 30) == {}
    cfg.train.progressive_epochs = 12  # 12 of 30 low-resolution epochs: 1 of 3, none of 1
    assert hypermodel.compressed_schedule(cfg, 3)["train.progressive_epochs"] == 1
    assert hypermodel.compressed_schedule(cfg, 1)["train.progressive_epochs"] == 0


class _Model:
    stop_training = False


@pytest.mark.parametrize("losses, stopped", [
    ([2.30, 2.30, 2.29, 2.30, 2.30], 3),  # flat: judged after max(3, 30 % of 10) epochs
    ([2.30, 2.10, 1.90, 1.70, 1.50], 0),  # falling: never stopped
    ([float("nan"), 2.30, 2.30, 2.30], 3),  # a NaN epoch is not the reference
])
def test_a_flat_run_is_stopped_early(losses, stopped):
    cb = StopWhenFlat(10)
    cb.set_model(_Model())
    cb.on_train_begin()
    for epoch, loss in enumerate(losses):
        cb.on_epoch_end(epoch, {"loss": loss})
        if cb.model.stop_training:
            break
    assert cb.stopped_epoch == stopped


@pytest.mark.parametrize("val_accuracies, stopped", [
    ([0.10, 0.09, 0.12, 0.11], 3),  # never above 10 % + noise: stopped after 3 of 10 epochs
    ([0.10, 0.12, 0.30, 0.50], 0),  # left chance by epoch 3
    ([0.10, 0.50, 0.10, 0.10], 0),  # left chance once: it learnt something
])
def test_a_run_at_chance_is_stopped_early(val_accuracies, stopped):
    bound = chance_bound(0.1, 180)
    assert bound == pytest.approx(0.1 + 3 * (0.09 / 180) ** 0.5)
    cb = StopWhenFlat(10, chance=bound)
    cb.set_model(_Model())
    cb.on_train_begin()
    for epoch, val in enumerate(val_accuracies):  # the loss falls: not flat
        cb.on_epoch_end(epoch, {"loss": 2.0 - 0.2 * epoch, "val_accuracy": val})
        if cb.model.stop_training:
            break
    assert cb.stopped_epoch == stopped
    assert ("at chance" in cb.reason()) == bool(stopped)


def test_chance_comes_from_the_callers_labels():
    cfg = configs.get("digits_mlp:quick")
    y = np.array([0] * 60 + [1] * 20 + [2] * 20)
    x = np.zeros((100, 3), "float32")
    size = cfg.dataset.val_size
    assert repair.chance_of((x, y), cfg) == pytest.approx(chance_bound(0.6, round(100 * size)))
    one_hot = np.eye(3)[y]
    assert repair.chance_of((x, one_hot, x, one_hot), cfg) == repair.chance_of((x, y), cfg)
    assert repair.chance_of((x, one_hot.clip(0, 1) + 1e-3), cfg) is None  # not class ids
    assert repair.chance_of((x, y / 255.0), cfg) is None  # scaled labels: relabelled first
    assert repair.chance_of(None, cfg) is None  # the config's own dataset
