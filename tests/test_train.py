import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from helpers import KillAt, quick

from recipes import configs, data, io, pipeline, prepare, preprocessing, train

ARTIFACTS = ("config.json", "history.csv", "summary.json", "model.keras",
             "preprocessing.json", "preprocessing.npz")


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """The full digits_mlp recipe, trained once for the tests below."""
    workdir = str(tmp_path_factory.mktemp("digits") / "run")
    cfg = configs.get("digits_mlp")
    cfg.train.verbose = 0
    keras.utils.set_random_seed(0)
    summary = train.run(cfg, workdir)
    return workdir, summary


def test_digits_mlp_reaches_090_within_30_seconds(digits_run):
    workdir, summary = digits_run
    assert summary["test_accuracy"] >= 0.90
    assert summary["fit_seconds"] < 30
    assert summary["epochs"] == 30 and summary["stopped_reason"] == "completed"
    assert summary["dataset_source"]
    assert summary["parameters"] == 64 * 50 + 50 + 50 * 10 + 10
    for name in ARTIFACTS:
        assert os.path.isfile(os.path.join(workdir, name)), name
    assert os.path.isdir(os.path.join(workdir, "tensorboard"))
    assert not os.path.exists(os.path.join(workdir, "backup"))  # removed once finished
    on_disk = io.read_json(os.path.join(workdir, "summary.json"), what="summary")
    assert on_disk["test_accuracy"] == summary["test_accuracy"]


def test_history_has_one_row_per_epoch_with_lr(digits_run):
    workdir, _ = digits_run
    rows = io.read_csv(os.path.join(workdir, "history.csv"))
    assert [int(r["epoch"]) for r in rows] == list(range(1, 31))
    for column in ("loss", "accuracy", "val_loss", "val_accuracy", "lr"):
        assert column in rows[0], column
    assert float(rows[0]["lr"]) == pytest.approx(1e-3)
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])


def test_saved_model_reloads_in_safe_mode_and_predicts_identically(digits_run):
    workdir, summary = digits_run
    cfg = configs.complete(json.load(open(os.path.join(workdir, "config.json"))))
    splits = data.load("digits")
    pre = preprocessing.Preprocessor.load(workdir)
    model = keras.saving.load_model(os.path.join(workdir, "model.keras"), safe_mode=True)
    x = pre.transform(splits.test.x)
    logits = model.predict(x, verbose=0)
    accuracy = float(np.mean(logits.argmax(-1) == splits.test.y))
    assert accuracy == pytest.approx(summary["test_accuracy"], abs=1e-6)
    ds = pipeline.make(splits.test.x, splits.test.y, cfg, training=False, num_classes=10,
                       preprocessor=pre)
    np.testing.assert_allclose(model.predict(ds, verbose=0), logits, rtol=1e-5, atol=1e-5)


def test_saved_model_loads_after_importing_recipes_alone(tmp_path):
    # A notebook that only does ``import recipes`` must load any run's model.keras: the
    # warmup schedule, the SVM loss and the builders' initializers are babysit classes.
    cfg = quick(**{"schedule.warmup_epochs": 1.0, "loss.name": "svm", "model.init": "lecun"})
    train.run(cfg, str(tmp_path / "run"))
    code = ("import sys, keras, recipes\n"
            "m = keras.saving.load_model(sys.argv[1], safe_mode=True)\n"
            "print(type(m.optimizer.learning_rate).__name__, type(m.loss).__name__)")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run" / "model.keras")],
                         capture_output=True, text=True, cwd=str(tmp_path), timeout=120,
                         env=dict(os.environ, PYTHONPATH=root))
    assert out.returncode == 0, out.stderr[-2000:]
    assert "MulticlassHinge" in out.stdout


def test_finished_run_is_not_overwritten(digits_run):
    workdir, _ = digits_run
    before = open(os.path.join(workdir, "summary.json")).read()
    with pytest.raises(ValueError, match="finished run"):
        train.run(quick(), workdir)
    assert open(os.path.join(workdir, "summary.json")).read() == before


def test_overwrite_replaces_a_finished_run(tmp_path):
    workdir = str(tmp_path / "w")
    train.run(quick(), workdir)
    summary = train.run(quick(**{"train.epochs": 2}), workdir, overwrite=True)
    assert summary["epochs"] == 2
    assert len(io.read_csv(os.path.join(workdir, "history.csv"))) == 2


def test_unfinished_run_of_another_config_is_refused(tmp_path):
    workdir = tmp_path / "w"
    workdir.mkdir()
    (workdir / "config.json").write_text(json.dumps(quick(**{"train.epochs": 9}).to_dict()))
    with pytest.raises(ValueError, match="another config"):
        train.run(quick(), str(workdir))


@pytest.mark.slow
def test_fashion_mlp_five_epochs_reaches_085(tmp_path):
    if not os.path.exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"):
        pytest.skip("needs Debian's dataset-fashion-mnist")
    cfg = configs.get("fashion_mlp")
    cfg.train.epochs = 5
    cfg.train.verbose = 0
    cfg.monitor.tensorboard = False
    summary = train.run(cfg, str(tmp_path / "fashion"))
    assert summary["num_test"] == 10000
    assert summary["test_accuracy"] >= 0.85


@pytest.mark.parametrize("every, kept", [(0.0, 2), (1e9, 0)])
def test_killed_run_resumes_to_the_same_result(tmp_path, every, kept):
    # every=0: a kill loses at most one epoch. A long train.save_every_seconds: the kill
    # lands before the first write, and the run restarts from scratch to the same result.
    cfg = quick(**{"train.epochs": 4, "augment.translation": 0.1, "model.dropout": 0.1,
                   "train.save_every_seconds": every})
    full = train.run(cfg, str(tmp_path / "full"))
    workdir = str(tmp_path / "killed")
    with pytest.raises(KeyboardInterrupt):
        train.run(cfg, workdir, extra_callbacks=[KillAt(after=2)])
    history = os.path.join(workdir, "history.csv")
    assert len(io.read_csv(history) if os.path.exists(history) else []) == kept
    assert not os.path.exists(os.path.join(workdir, "summary.json"))
    resumed = train.run(cfg, workdir)
    rows_full = io.read_csv(str(tmp_path / "full" / "history.csv"))
    rows_resumed = io.read_csv(os.path.join(workdir, "history.csv"))
    assert len(rows_resumed) == len(rows_full) == 4
    # Bit for bit on CPU: weights, optimizer state, shuffle order, augmentation and dropout
    # masks of every epoch depend on (seed, epoch) alone (pipeline.EpochSeed).
    for a, b in zip(rows_full, rows_resumed, strict=True):
        for key in ("loss", "accuracy", "val_loss", "val_accuracy", "lr"):
            assert float(a[key]) == float(b[key]), (a["epoch"], key)
    for key in ("train_loss", "val_loss", "test_loss", "test_accuracy"):
        assert resumed[key] == full[key], key


def test_crop_averaging_best_checkpoint_and_summary(tmp_path):
    workdir = tmp_path / "w"
    cfg = quick(**{"evaluate.tta": "ten_crop", "evaluate.tta_every": 2, "train.epochs": 4})
    summary = train.run(cfg, str(workdir))
    assert summary["tta_mode"] == "ten_crop"
    assert 0.0 <= summary["test_tta_accuracy"] <= 1.0
    assert summary["test_tta_accuracy"] != summary["test_accuracy"] or summary["test_accuracy"]
    rows = io.read_csv(str(workdir / "history.csv"))
    tta_values = [r["val_tta_accuracy"] for r in rows]
    assert tta_values[0] == "nan" and float(tta_values[1]) > 0  # every 2nd epoch
    best = keras.saving.load_model(str(workdir / "best.keras"), safe_mode=True)
    assert best.count_params() == summary["parameters"]


def test_optimizer_switch_and_momentum_schedule_from_config(tmp_path):
    cfg = quick(**{"optimizer.name": "adam", "optimizer.switch_to": "momentum",
                   "optimizer.switch_epoch": 2, "optimizer.switch_learning_rate": 0.01,
                   "optimizer.momentum_epochs": 2, "train.epochs": 3})
    train.run(cfg, str(tmp_path / "w"))
    rows = io.read_csv(str(tmp_path / "w" / "history.csv"))
    assert float(rows[0]["momentum"]) == pytest.approx(0.5)  # beta_1 ramps 0.5 -> 0.9
    assert float(rows[-1]["lr"]) == pytest.approx(0.01)  # SGD+momentum after the switch
    model = keras.saving.load_model(str(tmp_path / "w" / "model.keras"), safe_mode=True)
    assert type(model.optimizer).__name__ == "SGD"


@pytest.mark.parametrize("overrides, match", [
    ({"optimizer.switch_to": "adamm"}, "optimizer.switch_to"),
    ({"evaluate.tta": "twelve_crop"}, "evaluate.tta"),
    ({"evaluate.tta": "center", "dataset.preprocess": "pca"}, "vectors"),
])
def test_bad_callback_fields_fail_before_writing(tmp_path, overrides, match):
    with pytest.raises(ValueError, match=match):
        train.run(quick(**overrides), str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()


def test_imbalanced_classes_start_at_the_prior_entropy():
    splits = data.load("digits")
    keep = (splits.train.y == 0) | (np.arange(len(splits.train)) % 6 == 0)
    train_split = data.Split(splits.train.x[keep], splits.train.y[keep])
    imbalanced = data.Splits(train_split, splits.val, splits.test, splits.info)
    prior = np.bincount(train_split.y, minlength=10) / len(train_split)
    entropy = float(-(prior * np.log(prior)).sum())
    p = train.prepare(quick(), splits=imbalanced)
    bias = p.model.get_layer("logits").bias.numpy()
    np.testing.assert_allclose(bias - bias.mean(), np.log(prior) - np.log(prior).mean(),
                               atol=1e-5)
    x, y = next(iter(p.train_ds))
    loss = float(keras.losses.CategoricalCrossentropy(from_logits=True)(y, p.model(x)))
    assert loss == pytest.approx(entropy, rel=0.1)
    assert entropy < np.log(10) - 0.3  # the check means something: well below ln C


def test_monitors_write_into_history_and_records(tmp_path):
    workdir = tmp_path / "w"
    cfg = quick(**{"monitor.update_ratio_every": 3, "monitor.activations_every": 1,
                   "monitor.first_layer_every": 2, "train.epochs": 4})
    train.run(cfg, str(workdir))
    rows = io.read_csv(str(workdir / "history.csv"))
    for column in ("update_ratio_median", "act_std_min", "act_dead_max", "exploded"):
        assert column in rows[-1] and rows[-1][column] != "", column
    assert 1e-6 < float(rows[-1]["update_ratio_median"]) < 1
    assert json.loads((workdir / "update_ratios.json").read_text())[0]["ratios"]
    assert json.loads((workdir / "activation_stats.json").read_text())[-1]["layers"]
    images = sorted(p.name for p in (workdir / "plots" / "first_layer").iterdir())
    assert images == ["first_layer_epoch002.png", "first_layer_epoch004.png"]


def test_exploding_run_stops_with_its_reason(tmp_path):
    cfg = quick(**{"optimizer.name": "sgd", "optimizer.learning_rate": 1e6, "train.epochs": 5})
    summary = train.run(cfg, str(tmp_path / "w"))
    assert summary["epochs"] == 1
    assert "nan" in summary["stopped_reason"] or "3" in summary["stopped_reason"]


def test_same_seed_gives_identical_history_with_op_determinism_on(tmp_path):
    # Issue 7: train.seed fixes Python, NumPy and TF seeds and enables op determinism, so
    # two runs of one config (augmentation and dropout included) agree to the last bit.
    from tensorflow.python.framework import config as tf_config

    cfg = quick(**{"train.epochs": 3, "model.dropout": 0.2, "augment.noise_std": 0.1})
    runs = []
    for name in ("a", "b"):
        train.run(cfg, str(tmp_path / name))
        assert tf_config.is_op_determinism_enabled()
        runs.append(open(tmp_path / name / "history.csv").read())
    assert runs[0] == runs[1]
    other = quick(**{"train.epochs": 3, "model.dropout": 0.2, "augment.noise_std": 0.1,
                     "train.seed": 1})
    train.run(other, str(tmp_path / "c"))
    assert open(tmp_path / "c" / "history.csv").read() != runs[0]  # the seed matters
    train.prepare(quick(**{"train.deterministic": False}))
    assert not tf_config.is_op_determinism_enabled()  # a later run may switch it off


@pytest.mark.parametrize("value, expected", [("auto", "auto"), ("false", False), ("True", True),
                                             (False, False), (True, True)])
def test_jit_compile_accepts_the_cli_spellings(value, expected):
    # The field is a string so --config.train.jit_compile=false can set it from the CLI.
    assert prepare.jit_compile(value) is expected or prepare.jit_compile(value) == expected


def test_jit_compile_rejects_other_values():
    with pytest.raises(ValueError, match="train.jit_compile must be auto, true or false"):
        prepare.jit_compile("sometimes")


def test_epoch_lines_and_the_closing_lines_are_what_a_person_reads(tmp_path, capsys):
    train.run(quick(**{"train.epochs": 2, "train.verbose": 2, "monitor.tensorboard": True}),
              str(tmp_path / "w"))
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Epoch 1/2"
    assert "val_accuracy:" in out[1] and " lr: " in out[1]
    for key in ("act_", "grad_norm", "update_ratio", "exploded", "learning_rate"):
        assert key not in out[1], key  # the monitors' numbers go to the files
    assert out[-2] == f"curves: tensorboard --logdir {tmp_path / 'w'}/tensorboard"
    assert out[-1].startswith("next:   python -m recipes.predict --workdir=")
