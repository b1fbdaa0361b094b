"""tuning.results: records from KerasTuner trials, the lecture's line, trials.csv, plots."""

import os

import keras_tuner as kt
import pytest

from recipes import configs, io
from tuning import results
from tuning import space as S


def make_trial(trial_id, values, metrics, status="COMPLETED", message=None):
    space = S.parse("optimizer.learning_rate=log:1e-6:1e0,model.l2=log:1e-6:1e2,"
                    "model.hidden=choice:50|100-50")
    hp = S.declare(space, kt.HyperParameters())
    hp.values.update(values)
    t = kt.engine.trial.Trial(hp, trial_id=trial_id, status=status, message=message)
    for name, value in metrics.items():
        t.metrics.register(name, direction="max" if name == "val_accuracy" else "min")
        t.metrics.update(name, value)
    return t


CFG = configs.complete(None)
VALUES = {"optimizer.learning_rate": 1.405206e-04, "model.l2": 4.793564e-01,
          "model.hidden": "100-50"}
OK = {"val_accuracy": 0.412, "val_loss": 1.7, "epochs_run": 2.0, "epochs_trained": 2.0,
      "seconds": 3.25,
      "exploded": 0.0, "explosion_step": -1.0}


def test_record_of_a_completed_trial():
    rec = results.record(make_trial("0", VALUES, OK), stage=1, config=CFG)
    assert rec["status"] == "completed" and rec["number"] == 1
    assert rec["values"]["model.hidden"] == (100, 50)
    assert rec["val_accuracy"] == pytest.approx(0.412) and rec["epochs_run"] == 2
    assert rec["reason"] == ""


def test_record_of_an_exploded_trial_local_and_remote():
    metrics = dict(OK, val_accuracy=0.0, val_loss=1e9, epochs_run=1.0, exploded=2.0,
                   explosion_step=3.0, epochs_trained=0.2)
    local = results.record(make_trial("1", VALUES, metrics, message="loss > 3× initial "
                                      "(9 > 3 × 2.3) at step 3"), stage=1, config=CFG)
    assert local["status"] == "exploded" and "(9 > 3 × 2.3)" in local["reason"]
    assert local["epochs_run"] == 1 and local["epochs_trained"] == pytest.approx(0.2)
    remote = results.record(make_trial("1", VALUES, metrics), stage=1, config=CFG)
    assert remote["reason"] == "loss > 3× initial at step 3"
    nan = results.record(make_trial("1", VALUES, dict(metrics, exploded=1.0)), stage=1,
                         config=CFG)
    assert nan["reason"] == "nan/inf loss at step 3"


def test_record_of_failed_and_running_trials():
    failed = results.record(make_trial("2", VALUES, {}, status="FAILED",
                                       message="Traceback ...\nRuntimeError: boom\n"),
                            stage=2, config=CFG)
    assert failed["status"] == "failed" and failed["reason"] == "RuntimeError: boom"
    assert failed["val_accuracy"] is None
    running = results.record(make_trial("3", VALUES, {}, status="RUNNING"), stage=1,
                             config=CFG)
    assert running["status"] == "running"


def test_line_is_the_lecture_format():
    rec = {"values": {"optimizer.learning_rate": 1.405206e-04, "model.l2": 4.793564e-01},
           "val_accuracy": 0.412, "number": 1, "status": "completed", "reason": ""}
    assert results.line(rec, 100) == \
        "val_acc: 0.412000, lr: 1.405206e-04, reg: 4.793564e-01, (1 / 100)"
    rec2 = dict(rec, values=dict(rec["values"], **{"model.hidden": (100, 50),
                                                   "optimizer.name": "adam",
                                                   "train.batch_size": 64}),
                status="exploded", reason="nan/inf loss at step 2", val_accuracy=0.0)
    assert results.line(rec2, 20) == (
        "val_acc: 0.000000, lr: 1.405206e-04, reg: 4.793564e-01, hidden: 100-50, "
        "name: adam, batch_size: 64, (1 / 20) exploded: nan/inf loss at step 2")


def test_short_names_keep_ambiguous_paths_whole():
    names = results.short_names(["optimizer.learning_rate", "model.l2", "optimizer.name",
                                 "schedule.name", "model.dropout"])
    assert names == {"optimizer.learning_rate": "lr", "model.l2": "reg",
                     "optimizer.name": "optimizer.name", "schedule.name": "schedule.name",
                     "model.dropout": "dropout"}


def _records():
    recs = []
    for i, (lr, reg, acc, status) in enumerate([(1e-3, 1e-4, 0.9, "completed"),
                                                (1e-1, 1e-2, 0.0, "exploded"),
                                                (1e-5, 1e-3, 0.3, "completed"),
                                                (3e-4, 1e-5, None, "running")]):
        recs.append({"stage": 1 + (i == 2), "trial": str(i), "number": i + 1, "status": status,
                     "values": {"optimizer.learning_rate": lr, "model.l2": reg,
                                "model.hidden": (50,)},
                     "val_accuracy": acc, "val_loss": 1.0 if acc else None,
                     "epochs_run": 1 if acc is not None else None, "seconds": 1.23456,
                     "reason": "boom" if status == "exploded" else ""})
    return recs


def test_trials_csv_has_every_finished_trial_sorted(tmp_path):
    path = str(tmp_path / "trials.csv")
    params = ["optimizer.learning_rate", "model.l2", "model.hidden"]
    results.write_trials_csv(path, list(reversed(_records())), params)
    rows = io.read_csv(path)
    assert [(r["stage"], r["trial"]) for r in rows] == [("1", "0"), ("1", "1"), ("2", "2")]
    assert list(rows[0]) == ["stage", "trial", "status", *params, "val_accuracy", "val_loss",
                             "epochs_run", "epochs_trained", "seconds", "reason"]
    assert rows[0]["model.hidden"] == "50" and rows[0]["seconds"] == "1.235"
    assert rows[1]["status"] == "exploded" and rows[1]["reason"] == "boom"
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temp files left


def test_best_of_skips_exploded_and_running():
    assert results.best_of(_records())["trial"] == "0"
    assert results.best_of([r for r in _records() if r["trial"] != "0"])["trial"] == "2"
    assert results.best_of([]) is None


def test_plots(tmp_path):
    recs = _records()
    ranges = [S.describe(S.parse("optimizer.learning_rate=log:1e-6:1e0,model.l2=log:1e-6:1e0,"
                                 "model.hidden=choice:50|100")),
              S.describe(S.parse("optimizer.learning_rate=log:1e-5:1e-2,"
                                 "model.l2=log:1e-5:1e-1,model.hidden=choice:50"))]
    paths = results.plot_params(recs, ranges[0], str(tmp_path / "plots"))
    assert sorted(os.path.basename(p) for p in paths) == [
        "val_accuracy_vs_model_l2.png", "val_accuracy_vs_optimizer_learning_rate.png"]
    out = results.plot_lr_reg(recs, ranges, str(tmp_path / "plots" / "lr_reg.png"))
    assert out and os.path.getsize(out) > 1000
    no_reg = [S.describe(S.parse("optimizer.learning_rate=log:1e-6:1e0"))]
    assert results.plot_lr_reg(recs, no_reg, str(tmp_path / "x.png")) is None


def test_best_config_py_and_json_give_the_same_tree(tmp_path):
    cfg = S.apply(configs.get("digits_mlp:quick"), {"optimizer.learning_rate": 3e-3,
                                                    "model.hidden": "100-50"})
    best = {"values": {"optimizer.learning_rate": 3e-3, "model.hidden": (100, 50)},
            "val_accuracy": 0.9, "stage": 2, "epochs_run": 4}
    json_path, py_path = results.write_best_config(str(tmp_path), cfg, best)
    tree = io.read_json(json_path, what="best config")
    assert tree["model"]["hidden"] == [100, 50]
    loaded = configs.get(py_path)
    assert loaded.to_dict() == cfg.to_dict()
    assert loaded.model.hidden == (100, 50)
    text = open(py_path).read()
    assert "python -m recipes.train --config=" in text and "0.9000" in text
    with pytest.raises(ValueError, match="no argument"):
        configs.get(py_path + ":quick")
