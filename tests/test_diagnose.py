"""recipes.diagnose: every rule on synthetic curves, then on real short Keras runs on digits."""

import json
import math
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from recipes import diagnose as dg
from recipes.diagnose import Finding, diagnose, format_findings

RNG = np.random.default_rng(0)
STEPS = 30  # steps per epoch of the synthetic per-step curves


def _epochs(steps: np.ndarray) -> list[float]:
    return steps.reshape(-1, STEPS).mean(axis=1).tolist()


def _decay(n=300, tau=30.0, lo=0.1, hi=2.3, noise=0.03):
    t = np.arange(n)
    return np.clip(lo + (hi - lo) * np.exp(-t / tau) + RNG.normal(0, noise, n), 1e-3, None)


def _healthy(epochs=10):
    steps = _decay(epochs * STEPS)
    e = np.arange(epochs)
    acc = (0.1 + 0.88 * (1 - np.exp(-(e + 1) / 1.5))).tolist()
    history = {"loss": _epochs(steps), "val_loss": [v * 1.05 + 0.02 for v in _epochs(steps)],
               "accuracy": acc, "val_accuracy": [a - 0.02 for a in acc]}
    return history, steps


def _case(history=None, stats=None, steps=None):
    return history or {}, stats or {}, None if steps is None else np.asarray(steps).tolist()


def _sawtooth(n=240, period=STEPS):
    return _decay(n, noise=0.02) + 0.5 * (np.arange(n) % period) / period


LINEAR = [2.3 - 0.04 * (e + 0.5) for e in range(15)]
PLATEAU = np.r_[np.full(100, 2.3), 0.2 + 2.1 * np.exp(-np.arange(200) / 30.0)]
CONVERGED = [1.4 + 0.9 * math.exp(-e) for e in range(8)]
SAWTOOTH = _sawtooth()  # sorted data: each epoch walks the classes in the same order
CASES = {
    "diverged": _case({"loss": [2.3, 1.9, float("nan")]}),
    "loss_increasing": _case({"loss": np.linspace(2.3, 2.9, 10).tolist()}),
    "not_training": _case({"loss": np.linspace(2.301, 2.299, 20).tolist()}, {"num_classes": 10}),
    "too_linear": _case({"loss": LINEAR}, {"num_classes": 10}),
    "noisy": _case(steps=_decay(300, lo=0.8, noise=0.4)),
    "slow_start": _case(steps=PLATEAU + RNG.normal(0, 0.01, 300)),
    "not_converged": _case({"loss": [2 * math.exp(-e / 20) for e in range(10)]}),
    "overfitting": _case({"loss": [1.0, 0.5, 0.2, 0.1], "val_loss": [1.0, 0.6, 0.5, 0.5],
                          "accuracy": [0.7, 0.9, 0.99, 1.0], "val_accuracy": [0.7, 0.8, 0.8, 0.8]}),
    "underfitting": _case({"loss": CONVERGED, "val_loss": CONVERGED,
                           "accuracy": [0.3, 0.45, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5],
                           "val_accuracy": [0.3, 0.45, 0.49, 0.49, 0.49, 0.49, 0.49, 0.49]},
                          {"num_classes": 10}),
    "cyclic": _case({"loss": _epochs(SAWTOOTH)}, steps=SAWTOOTH),
    "update_ratio": _case({"update_ratio_median": [2e-5, 3e-5, 2e-5]}),
    "dead_units": _case(stats={"activation_stats": [{"name": "act_1", "dead": 0.45}]}),
    "saturated_units": _case({"act_saturated_max": [0.3, 0.6]}),
    "best_at_search_edge": _case(stats={"search": {"learning_rate": {
        "best": 1.3e-6, "lo": 1e-6, "hi": 1e-2, "log": True}}}),
    "gradients": _case({"grad_norm_ratio": [2e-5, 3e-5, 2e-5]}),
    "short_run": _case({"loss": [1.4], "accuracy": [0.3]}, {"steps_per_epoch": 3}),
}
SEVERITY = {"diverged": "error", "loss_increasing": "error", "not_training": "error",
            "best_at_search_edge": "info"}


def test_every_code_has_a_case_and_a_check():
    assert set(CASES) == set(dg.CODES)
    assert all(callable(getattr(dg, f"_check_{code}")) for code in dg.CODES)


@pytest.mark.parametrize("code", dg.CODES)
def test_each_code_fires_on_its_synthetic_curve(code):
    history, stats, steps = CASES[code]
    findings = {f.code: f for f in diagnose(history, stats, batch_history=steps)}
    assert code in findings, format_findings(list(findings.values()))
    f = findings[code]
    assert f.severity == SEVERITY.get(code, "warning")
    assert re.search(r"\d", f.evidence) and "\n" not in f.evidence and f.advice


@pytest.mark.parametrize("with_steps", [True, False])
def test_healthy_synthetic_run_has_no_warnings(with_steps):
    history, steps = _healthy()
    findings = diagnose(history, {"num_classes": 10, "steps_per_epoch": STEPS},
                        batch_history=steps if with_steps else None)
    assert [f for f in findings if f.severity != "info"] == [], format_findings(findings)


@pytest.mark.parametrize("history", [
    {}, {"loss": []}, {"loss": [0.5]}, {"loss": [0.9, 0.5]}, {"val_loss": [1.0, 2.0]},
    {"loss": ["2.1", "", "1.0"]}, {"loss": [0.5], "accuracy": [0.9], "val_accuracy": [0.88]},
])
def test_short_and_partial_histories_do_not_crash_or_warn(history):
    findings = diagnose(history, {"num_classes": 10})
    assert all(isinstance(f, Finding) for f in findings)
    assert [f.code for f in findings if f.severity != "info"] == []


def test_nan_and_explosion_are_errors_and_stop_the_curve_rules():
    for history, steps in [({"loss": [2.3, math.inf]}, None),
                           ({"loss": [2.3, 1.0]}, [2.3, math.nan] * 5),
                           ({"loss": [2.3, 2.0], "exploded": [0.0, 1.0]}, None)]:
        codes = [f.code for f in diagnose(history, {"num_classes": 10}, batch_history=steps)]
        assert codes == ["diverged"]


def test_one_epoch_at_chance_is_not_training_and_order_is_by_severity():
    findings = diagnose({"loss": [2.31]}, {"num_classes": 10})
    assert [(f.code, f.severity, f.cause) for f in findings] == [
        ("not_training", "error", "learning_rate_too_low")]


def test_a_run_with_huge_updates_is_never_told_to_raise_its_lr():
    # A loss falling in a straight line reads as "lr too low"; updates at half the weights
    # say "too high". The resolution rule: the higher lr-cause wins, the other is explained.
    findings = diagnose({"loss": LINEAR, "update_ratio_median": [0.5] * len(LINEAR)},
                        {"num_classes": 10}, context=dg.Context(learning_rate=0.5))
    got = {f.code: (f.severity, f.cause, f.explained_by) for f in findings}
    assert got["update_ratio"] == ("warning", "learning_rate_too_high", "")
    assert got["too_linear"] == ("info", "learning_rate_too_low", "learning_rate_too_high")
    assert findings[0].code == "update_ratio"
    assert findings[0].remedies[0].change == {"optimizer.learning_rate": 0.05}
    assert findings[0].remedies[0].flags() == "--config.optimizer.learning_rate=0.05"
    assert [f for f in findings if f.code == "too_linear"][0].remedies == ()
    assert "lower the learning rate" in findings[0].advice


def test_large_updates_on_a_flat_loss_are_not_read_as_the_learning_rate():
    # Flat at ln C with huge update ratios: weights that do not matter (tiny, or behind a
    # vanished gradient), so the ratio says nothing about the lr.
    findings = diagnose({"loss": [2.31, 2.31, 2.31], "update_ratio_median": [0.5] * 3},
                        {"num_classes": 10})
    by_code = {f.code: f for f in findings}
    assert by_code["update_ratio"].severity == "info"
    assert by_code["not_training"].severity == "error"


def test_a_gradient_that_vanishes_before_the_first_update_is_found():
    history = {"loss": [2.31, 2.31, 2.31], "grad_norm_ratio": [3.0, 4.0, 5.0]}
    findings = diagnose(history, {"num_classes": 10, "initial_gradient_ratio": 1e-5})
    assert findings[0].cause == "vanishing_gradients", format_findings(findings)
    assert "before the first update" in findings[0].evidence


def test_search_edge_uses_log_units_and_the_middle_is_fine():
    history, _ = _healthy()

    def edge_findings(search):
        findings = diagnose(history, {"num_classes": 10, "search": search})
        return [f for f in findings if f.code == "best_at_search_edge"]

    # linearly near 0, but the middle in log units
    assert edge_findings({"lr": {"best": 1e-4, "lo": 1e-6, "hi": 1e-2, "log": True}}) == []
    (high,) = edge_findings({"reg": {"best": 0.95, "lo": 0, "hi": 1}})
    assert high.data["position"] > 0.9 and "high edge" in high.evidence
    assert edge_findings({"bad": {"best": 1}}) == []


def test_accepts_history_objects_and_csv_rows():
    history, _ = _healthy()
    rows = [{k: str(v[i]) for k, v in history.items()} for i in range(len(history["loss"]))]
    rows[-1]["lr"] = ""  # a column that appeared late: empty cells are skipped
    keras_history = keras.callbacks.History()
    keras_history.history = CASES["overfitting"][0]
    assert diagnose(rows, {"num_classes": 10}) == diagnose(history, {"num_classes": 10})
    assert [f.code for f in diagnose(keras_history)] == ["overfitting"]


def test_format_and_to_dict():
    findings = diagnose(*CASES["overfitting"][:2])
    table = format_findings(findings)
    assert table.splitlines()[0].split() == ["severity", "cause", "evidence"]
    assert "overfitting" in table and "--config.train.restore_best=True" in table
    first = json.loads(json.dumps(dg.to_dict(findings)))[0]
    assert (first["code"], first["cause"]) == ("overfitting", "overfitting")
    assert first["remedy"]["change"] == {"train.restore_best": True}
    assert "healthy" in format_findings([])


# Real short runs: a small MLP on scikit-learn's digits (offline), a few seconds each.


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = ((d.data - d.data.mean(0)) / (d.data.std(0) + 1e-6)).astype("float32")
    idx = np.random.default_rng(0).permutation(len(x))
    x, y = x[idx], keras.utils.to_categorical(d.target[idx], 10)
    return x[:1408], y[:1408], x[1408:], y[1408:]  # 1408 = 22 batches of 64


class StepLosses(keras.callbacks.Callback):
    """Per-step losses from Keras 3's running epoch means (weighted by batch size)."""

    def __init__(self, n: int, batch_size: int):
        super().__init__()
        self.n, self.batch_size, self.losses, self.total = n, batch_size, [], 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.total = 0.0

    def on_train_batch_end(self, batch, logs=None):
        seen, before = (min(k * self.batch_size, self.n) for k in (batch + 1, batch))
        total = float(logs["loss"]) * seen
        self.losses.append((total - self.total) / (seen - before))
        self.total = total


def _fit(data, optimizer, *, hidden=(32,), act="relu", init="glorot_uniform", epochs=10,
         batch_size=64, n=None, order=None, shuffle=True):
    x, y, xv, yv = data
    x, y = (x[order], y[order]) if order is not None else (x[:n], y[:n])
    layers = [keras.Input((64,))]
    for i, width in enumerate(hidden, 1):  # activations named act_* for models.inspect
        layers += [keras.layers.Dense(width, kernel_initializer=init),
                   keras.layers.Activation(act, name=f"act_{i}")]
    model = keras.Sequential([*layers, keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer=optimizer, loss="categorical_crossentropy", metrics=["accuracy"],
                  jit_compile=False)
    # tf.data reshuffles every epoch; fit(numpy, shuffle=True) after keras.utils.set_random_seed
    # repeats one permutation each epoch (Keras 3.15), which `cyclic` rightly reports.
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    ds = (ds.shuffle(len(x), seed=0) if shuffle else ds).batch(batch_size)
    rec = StepLosses(len(x), batch_size)
    history = model.fit(ds, validation_data=(xv, yv), epochs=epochs, shuffle=False, verbose=0,
                        callbacks=[rec])
    return model, history.history, rec.losses


def _codes(history, steps, **stats):
    findings = diagnose(history, {"num_classes": 10, **stats}, batch_history=steps)
    return {f.code: f.severity for f in findings}, format_findings(findings)


def test_real_healthy_run_has_no_warnings(digits):
    _, history, steps = _fit(digits, keras.optimizers.Adam(1e-3), epochs=15)
    for batch_history in (steps, None):
        codes, table = _codes(history, batch_history)
        assert set(codes.values()) <= {"info"}, table


@pytest.mark.parametrize("lr, expected", [(1e-6, "not_training"), (3e-3, "too_linear")])
def test_real_low_learning_rates(digits, lr, expected):
    _, history, steps = _fit(digits, keras.optimizers.SGD(lr), epochs=8)
    codes, table = _codes(history, steps)
    assert expected in codes, table


def test_real_huge_learning_rate_diverges(digits):
    _, history, steps = _fit(digits, keras.optimizers.SGD(1e6), epochs=2)
    assert _codes(history, steps)[0] == {"diverged": "error"}


def test_real_sorted_unshuffled_data_is_cyclic(digits):
    order = np.argsort(digits[1].argmax(1), kind="stable")
    _, history, steps = _fit(digits, keras.optimizers.SGD(0.05), epochs=8, order=order,
                             shuffle=False)
    codes, table = _codes(history, steps)
    assert codes.get("cyclic") == "warning", table


def test_real_wide_net_on_few_examples_overfits(digits):
    _, history, steps = _fit(digits, keras.optimizers.Adam(1e-2), hidden=(256,), epochs=30,
                             batch_size=20, n=60)
    codes, table = _codes(history, steps)
    assert codes.get("overfitting") == "warning", table


def test_real_deep_sigmoid_net_with_unit_gaussian_init_saturates(digits):
    from models.inspect import activation_stats

    model, history, steps = _fit(digits, keras.optimizers.SGD(1e-2), hidden=(100,) * 5,
                                 act="sigmoid", init=keras.initializers.RandomNormal(0, 1),
                                 epochs=1)
    stats = activation_stats(model, digits[2])
    codes, table = _codes(history, steps, activation_stats=stats)
    assert codes.get("saturated_units") == "warning", table


@pytest.mark.slow
def test_real_two_unit_bottleneck_underfits_fashion_mnist():
    from recipes import data

    splits = data.load("fashion_mnist", limit=10000, val_size=2000)
    x, xv = (s.x.reshape(len(s.x), -1).astype("float32") / 255 - 0.5 for s in (splits.train,
                                                                               splits.val))
    y, yv = (keras.utils.to_categorical(s.y, 10) for s in (splits.train, splits.val))
    model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(2, activation="relu"),
                              keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="categorical_crossentropy",
                  metrics=["accuracy"])
    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=0).batch(128)
    history = model.fit(ds, validation_data=(xv, yv), epochs=12, shuffle=False,
                        verbose=0).history
    codes, table = _codes(history, None)
    assert codes.get("underfitting") == "warning", table


def test_a_train_val_gap_must_beat_the_val_sets_noise():
    history = {"loss": [1.0, 0.5, 0.3, 0.2], "val_loss": [1.0, 0.6, 0.5, 0.45],
               "accuracy": [0.7, 0.9, 0.97, 0.97], "val_accuracy": [0.7, 0.8, 0.83, 0.83]}
    few = diagnose(history, {"num_val": 12})  # ±0.32 at 83 %: a 14-point gap is noise
    many = diagnose(history, {"num_val": 1000})
    assert "overfitting" not in [f.code for f in few]
    assert "overfitting" in [f.code for f in many]
