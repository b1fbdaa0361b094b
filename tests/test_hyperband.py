"""tuning: ``search.strategy=hyperband`` (KerasTuner's Hyperband) on digits, fast."""

import os
import re
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from recipes import configs, io
from tuning import hypermodel as hm_lib
from tuning import tuners
from tuning.search import coarse_to_fine

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINE = re.compile(r"^val_acc: \d\.\d{6}, lr: \d\.\d{6}e[+-]\d\d, reg: [^,]+, \((\d+) / 6\)")
SPACE = "optimizer.learning_rate=log:1e-3:1e-1,model.l2=log:1e-6:1e-3"


# -- the plan: KerasTuner's bracket arithmetic -----------------------------------------------

def test_hyperband_plan_follows_kerastuner_brackets():
    p = tuners.hyperband_plan(2, 3, 3)
    # bracket 1: 3 trials x 1 epoch, the best continued from epoch 1 to 3; bracket 0: 2 x 3
    assert p.brackets == (((3, 0, 1), (1, 1, 3)), ((2, 0, 3),))
    assert (p.iterations, p.trials, p.trial_epochs) == (1, 6, 11)
    p9 = tuners.hyperband_plan(1, 9)
    assert (p9.trials, p9.trial_epochs) == (23, 75)
    # iterations: the whole ones closest to TRIALS x EPOCHS trial-epochs, at least one
    assert tuners.hyperband_plan(25, 9).iterations == 3  # 225 / 75
    assert tuners.hyperband_plan(4, 3).iterations == 1  # 12 / 11
    assert tuners.hyperband_plan(10, 3).trial_epochs == 33  # 30 / 11 -> 3 iterations
    for bad in (1, 0, 2.5, True, "3"):
        with pytest.raises(ValueError, match="search.hyperband_factor"):
            tuners.hyperband_plan(2, 3, bad)


def test_hyperband_values_split_off_kerastuner_bookkeeping():
    values, extra = tuners.hyperband_values({"model.l2": 1e-4, "tuner/epochs": 3,
                                             "tuner/initial_epoch": 1, "tuner/trial_id": "0"})
    assert values == {"model.l2": 1e-4}
    assert extra == {"tuner/epochs": 3, "tuner/initial_epoch": 1, "tuner/trial_id": "0"}


# -- a real Hyperband search ----------------------------------------------------------------

def _config():
    cfg = configs.get("digits_mlp:quick")
    cfg.train.verbose = 0
    cfg.monitor.tensorboard = False
    cfg.search.strategy = "hyperband"
    cfg.search.hyperband_factor = 3
    return cfg


@pytest.fixture(scope="module")
def hb(tmp_path_factory):
    cfg = _config()
    workdir = str(tmp_path_factory.mktemp("hyperband"))
    res = coarse_to_fine(cfg, SPACE, "2x3", keep_top=1, workdir=workdir, strategy="hyperband",
                         seed=0, verbose=0)
    return cfg, workdir, res


def test_hyperband_trials_get_different_budgets(hb):
    _, workdir, res = hb
    (stage,) = res.stages
    assert stage["hyperband"]["trials"] == stage["trials"] == 6 == len(res.trials)
    assert all(t["status"] == "completed" for t in res.trials)
    rounds = sorted((t["hyperband"]["from_epoch"], t["hyperband"]["to_epoch"], t["epochs_run"])
                    for t in res.trials)
    assert rounds == [(0, 1, 1)] * 3 + [(0, 3, 3)] * 2 + [(1, 3, 2)]
    (child,) = [t for t in res.trials if t["hyperband"]["parent"] is not None]
    parent = next(t for t in res.trials if t["trial"] == child["hyperband"]["parent"])
    assert child["values"] == parent["values"] and parent["epochs_run"] == 1
    # the best of the three 1-epoch trials is the one continued
    first = [t for t in res.trials if t["hyperband"]["to_epoch"] == 1]
    assert parent["val_accuracy"] == max(t["val_accuracy"] for t in first)
    assert all(not k.startswith("tuner/") for t in res.trials for k in t["values"])


def test_continued_trial_starts_from_its_parents_weights_and_optimizer(hb):
    cfg, workdir, res = hb
    (child,) = [t for t in res.trials if t["hyperband"]["parent"] is not None]
    parent_id = child["hyperband"]["parent"]
    plan = tuners.hyperband_plan(2, 3, 3)
    model = hm_lib.ConfigHyperModel(cfg, {}, epochs=3)
    tuner = tuners.make_tuner("hyperband", model,
                              oracle=tuners.make_oracle("hyperband", max_trials=plan.trials,
                                                        seed=0, plan=plan),
                              directory=os.path.join(workdir, "kt"), project_name="stage1")
    trial = tuner.oracle.get_trial(child["trial"])
    built = tuner._build_hypermodel(trial.hyperparameters)  # KerasTuner's: loads the parent
    path = os.path.join(workdir, "kt", "stage1", f"trial_{parent_id}", "checkpoint.weights.h5")
    with h5py.File(path) as f:
        kernel = f["layers"]["dense"]["vars"]["0"][()]  # the first Dense layer's kernel
        steps = int(f["optimizer"]["vars"]["0"][()])
    assert np.array_equal(built.get_weights()[0], kernel)
    assert steps > 0 and int(built.optimizer.iterations) == steps  # Adam's state too


def test_hyperband_epochs_spent_is_the_sum_of_per_trial_epochs(hb):
    _, workdir, res = hb
    rows = io.read_csv(os.path.join(workdir, "trials.csv"))
    assert len(rows) == 6 and not any(k.startswith("tuner/") for k in rows[0])
    per_trial = sum(float(r["epochs_trained"]) for r in rows)
    result = io.read_json(os.path.join(workdir, "result.json"), what="result")
    assert result["epochs_spent"] == res.epochs_spent == pytest.approx(per_trial) == 11
    assert res.stages[0]["hyperband"]["trial_epochs"] == 11
    stages = io.read_json(os.path.join(workdir, "stages.json"), what="stages")
    assert stages[0]["epochs_spent"] == 11 and stages[0]["hyperband"]["factor"] == 3


def test_hyperband_writes_best_config_lines_and_plots(hb):
    _, workdir, res = hb
    assert res.best is not None and res.best["val_accuracy"] > 0.5
    assert res.best["val_accuracy"] == max(t["val_accuracy"] for t in res.trials)
    cfg = configs.get(os.path.join(workdir, "best_config.py"))
    assert cfg.optimizer.learning_rate == res.best["values"]["optimizer.learning_rate"]
    assert cfg.to_dict() == configs.complete(
        io.read_json(os.path.join(workdir, "best_config.json"), what="best config")).to_dict()
    assert len(res.lines) == 6 and all(LINE.match(line) for line in res.lines), res.lines
    assert os.path.exists(os.path.join(workdir, "plots", "lr_reg.png"))


def test_finished_hyperband_search_resumes_without_rerunning(hb):
    cfg, workdir, res = hb
    before = io.read_csv(os.path.join(workdir, "trials.csv"))
    start = time.time()
    again = coarse_to_fine(cfg, SPACE, "2x3", keep_top=1, workdir=workdir,
                           strategy="hyperband", seed=0, verbose=0)
    assert time.time() - start < 20
    assert io.read_csv(os.path.join(workdir, "trials.csv")) == before
    assert again.best["values"] == res.best["values"]


def test_exploding_lr_is_aborted_early_in_hyperband(tmp_path):
    cfg = _config()
    res = coarse_to_fine(cfg, "optimizer.learning_rate=log:1e5:1e8", "2x3", keep_top=1,
                         workdir=str(tmp_path), strategy="hyperband", seed=0, verbose=0)
    assert len(res.trials) == 6 and res.best is None
    assert all(t["status"] == "exploded" for t in res.trials)
    fresh = [t for t in res.trials if t["hyperband"]["parent"] is None]
    assert all(0 < t["epochs_trained"] < 1 for t in fresh)  # stopped in its first epoch
    (child,) = [t for t in res.trials if t["hyperband"]["parent"] is not None]
    assert child["epochs_trained"] == 0 and "parent trial" in child["reason"]
    assert res.epochs_spent == pytest.approx(sum(t["epochs_trained"] for t in res.trials))
    assert res.epochs_spent < 5 * 1  # 11 planned


def test_bad_strategy_and_factor_name_the_field(tmp_path):
    cfg = _config()
    with pytest.raises(ValueError, match=r"search\.strategy .*'hyperbandd'.*random, grid or "
                                         r"hyperband"):
        coarse_to_fine(cfg, SPACE, "2x3", workdir=str(tmp_path), strategy="hyperbandd")
    cfg.search.hyperband_factor = 1
    with pytest.raises(ValueError, match="search.hyperband_factor must be an integer >= 2"):
        coarse_to_fine(cfg, SPACE, "2x3", workdir=str(tmp_path), strategy="hyperband")
    assert not os.listdir(tmp_path)


def test_cli_bad_strategy_is_one_line(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-m", "tuning.search", "--config=digits_mlp:quick",
                           f"--workdir={tmp_path / 's'}", "--trials=2", "--strategy=bogus"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "search.strategy" in lines[0] and "random, grid or hyperband" in lines[0]
