"""GradientNormMonitor: per-layer gradient norms on a probe batch (AUTOTRAINER's ratio rule)."""

import json
import logging
import math

import keras
import numpy as np
import pytest

from recipes import callbacks
from recipes.callbacks import gradients, monitors, writers

KEYS = ("grad_norm_first", "grad_norm_last", "grad_norm_ratio")


def _data(n=128, d=16, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)).astype("float32"), rng.integers(0, classes, n)


def _mlp(depth=2, act="relu", init="he_normal", *, d=16, classes=4, width=32, softmax=False,
         loss=None, l2=0.0, extras=False):
    """``depth`` Dense layers; ``extras`` adds BatchNormalization and Dropout."""
    keras.utils.set_random_seed(0)
    reg = keras.regularizers.L2(l2) if l2 else None
    inputs = keras.Input((d,))
    x = inputs
    for _ in range(depth - 1):
        x = keras.layers.Dense(width, activation=act, kernel_initializer=init,
                               kernel_regularizer=reg)(x)
        if extras:
            x = keras.layers.Dropout(0.3)(keras.layers.BatchNormalization()(x))
    outputs = keras.layers.Dense(classes, kernel_initializer=init, kernel_regularizer=reg,
                                 activation="softmax" if softmax else None)(x)
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9),
                  loss or keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _fit(model, x, y, monitor=None, epochs=2, **kw):
    cbs = [monitor] if monitor is not None else []
    return model.fit(x, y, epochs=epochs, batch_size=32, verbose=0, shuffle=False,
                     callbacks=cbs, **kw)


def _ratio(record):
    norms = [layer["grad_norm"] for layer in record["layers"]]
    return norms[0] / norms[-1]


def test_logs_get_the_three_columns_and_records_start_before_training():
    x, y = _data()
    model = _mlp(depth=3)
    w0 = float(np.sqrt(np.sum(np.square(model.layers[1].kernel.numpy().astype(np.float64)))))
    monitor = gradients.GradientNormMonitor(x, y)
    history = _fit(model, x, y, monitor).history
    for key in KEYS:
        assert len(history[key]) == 2 and all(math.isfinite(v) for v in history[key]), key
    assert [r["epoch"] for r in monitor.records] == [0, 1, 2]
    layers = monitor.records[-1]["layers"]
    assert [s["name"] for s in layers] == [layer.name for layer in model.layers[1:]]
    assert history["grad_norm_first"][-1] == layers[0]["grad_norm"]
    assert history["grad_norm_ratio"][-1] == pytest.approx(_ratio(monitor.records[-1]))
    assert all(s["weight_norm"] > 0 for s in layers)
    assert monitor.records[0]["layers"][0]["weight_norm"] == pytest.approx(w0)  # before any update
    assert layers[0]["weight_norm"] != pytest.approx(w0)
    assert monitor.verdict == ""


def test_deep_sigmoid_vanishes_and_shallow_relu_does_not():
    # Measured (5 seeds, 2 epochs): 10-layer sigmoid/Glorot 7e-7..3.5e-6; 2-3 layer ReLU/He
    # 0.3..1.05. The bounds leave a decade or more of margin.
    x, y = _data()
    deep = gradients.GradientNormMonitor(x, y)
    deep_ratios = _fit(_mlp(depth=10, act="sigmoid", init="glorot_normal"), x, y,
                       deep).history["grad_norm_ratio"]
    assert max(deep_ratios) < 1e-4 and _ratio(deep.records[0]) < 1e-4
    assert deep.verdict.startswith("epoch 1: vanishing")
    shallow = gradients.GradientNormMonitor(x, y)
    ratios = _fit(_mlp(depth=3), x, y, shallow).history["grad_norm_ratio"]
    assert all(0.1 < r < 10 for r in ratios) and 0.1 < _ratio(shallow.records[0]) < 10
    assert shallow.verdict == ""


def test_training_is_unchanged_by_the_monitor():
    x, y = _data()
    plain = _mlp(depth=3, extras=True)
    _fit(plain, x, y, epochs=3)
    watched = _mlp(depth=3, extras=True)
    _fit(watched, x, y, gradients.GradientNormMonitor(x, y), epochs=3)
    # BatchNormalization's moving statistics and the optimizer's slots included.
    assert all(np.array_equal(a, b) for a, b in zip(plain.get_weights(), watched.get_weights()))
    assert all(np.array_equal(a.numpy(), b.numpy())
               for a, b in zip(plain.optimizer.variables, watched.optimizer.variables))


def test_every_two_measures_even_epochs_only():
    x, y = _data()
    monitor = gradients.GradientNormMonitor(x, y, every=2)
    history = _fit(_mlp(), x, y, monitor, epochs=5).history
    assert [r["epoch"] for r in monitor.records] == [0, 2, 4]
    measured = [math.isfinite(v) for v in history["grad_norm_ratio"]]
    assert measured == [False, True, False, True, False]
    with pytest.raises(ValueError, match="every"):
        gradients.GradientNormMonitor(x, y, every=0)


def test_a_continued_fit_has_no_epoch_zero_record():
    x, y = _data()
    model = _mlp()
    _fit(model, x, y, epochs=1)
    monitor = gradients.GradientNormMonitor(x, y)
    _fit(model, x, y, monitor, epochs=3, initial_epoch=1)
    assert [r["epoch"] for r in monitor.records] == [2, 3]


@pytest.mark.parametrize("softmax, loss, onehot", [
    (False, keras.losses.SparseCategoricalCrossentropy(from_logits=True), False),
    (False, keras.losses.CategoricalCrossentropy(from_logits=True), True),
    (True, keras.losses.CategoricalCrossentropy(from_logits=False), True),
    (True, "sparse_categorical_crossentropy", False),
    (True, "categorical_crossentropy", True),
])
def test_loss_forms_give_the_same_gradients(softmax, loss, onehot):
    # A softmax output with a from_logits=False loss: Keras takes the logits from the graph,
    # so the gradients equal those of the logits model (no clipped-probability detour).
    x, y = _data()
    reference = gradients.GradientNormMonitor(x, y)
    _fit(_mlp(), x, y, reference, epochs=1)
    targets = keras.utils.to_categorical(y, 4) if onehot else y
    monitor = gradients.GradientNormMonitor(x, targets)
    _fit(_mlp(softmax=softmax, loss=loss), x, targets, monitor, epochs=1)
    for got, want in zip(monitor.records, reference.records):
        np.testing.assert_allclose([s["grad_norm"] for s in got["layers"]],
                                   [s["grad_norm"] for s in want["layers"]], rtol=1e-4)


def test_regularization_penalties_are_left_out():
    x, y = _data()
    plain = gradients.GradientNormMonitor(x, y)
    _fit(_mlp(), x, y, plain, epochs=1)
    penalized = gradients.GradientNormMonitor(x, y)
    _fit(_mlp(l2=1.0), x, y, penalized, epochs=1)
    np.testing.assert_allclose([s["grad_norm"] for s in penalized.records[0]["layers"]],
                               [s["grad_norm"] for s in plain.records[0]["layers"]], rtol=1e-4)


def test_probe_is_capped():
    x, y = _data(n=300)
    monitor = gradients.GradientNormMonitor(x, y, max_examples=100)
    assert len(monitor.probe_x) == len(monitor.probe_y) == 100
    assert len(gradients.GradientNormMonitor(x, y).probe_x) == gradients.PROBE_EXAMPLES
    with pytest.raises(ValueError, match="probe_y"):
        gradients.GradientNormMonitor(x, None)


@pytest.mark.parametrize("ratio, verdict", [
    (1e-6, "vanishing"), (9.9e-4, "vanishing"), (1e-3, None), (0.09, None), (1.0, None),
    (70.0, None), (70.1, "exploding"), (math.inf, "exploding"), (math.nan, None),
])
def test_gradient_verdict_table(ratio, verdict):
    assert gradients.gradient_verdict(ratio) == verdict
    assert callbacks.gradient_verdict is gradients.gradient_verdict


def test_gradient_verdict_thresholds_and_summary():
    assert (gradients.GRAD_RATIO_LOW, gradients.GRAD_RATIO_HIGH) == (1e-3, 70.0)
    assert gradients.gradient_verdict(0.05, low=0.1) == "vanishing"
    assert gradients.gradient_verdict(5.0, high=2.0) == "exploding"
    one = [{"name": "a", "grad_norm": 2.0, "weight_norm": 1.0}]
    two = one + [{"name": "b", "grad_norm": 0.5, "weight_norm": 1.0}]
    assert gradients.summarize_gradients(two) == {
        "grad_norm_first": 2.0, "grad_norm_last": 0.5, "grad_norm_ratio": 4.0}
    assert math.isnan(gradients.summarize_gradients(one)["grad_norm_ratio"])
    zero = [one[0], dict(two[1], grad_norm=0.0)]
    assert math.isnan(gradients.summarize_gradients(zero)["grad_norm_ratio"])
    assert all(math.isnan(v) for v in gradients.summarize_gradients([]).values())


def test_kernel_layers_skip_frozen_and_kernel_free_layers():
    model = _mlp(depth=3, extras=True)
    names = [layer.name for layer in gradients.kernel_layers(model)]
    assert len(names) == 3 and all(n.startswith("dense") for n in names)
    model.layers[1].trainable = False
    assert len(gradients.kernel_layers(model)) == 2


def test_monitor_callbacks_builds_it_only_when_on(tmp_path, caplog):
    x, y = _data(n=8)
    off = {"explosion_factor": 3.0, "update_ratio_every": 0, "activations_every": 0,
           "first_layer_every": 0, "gradient_norms_every": 0}
    names = [type(c).__name__ for c in monitors.monitor_callbacks(off, probe_x=x, probe_y=y)]
    assert names == ["ExplosionGuard"]
    on = dict(off, gradient_norms_every=3)
    cbs = monitors.monitor_callbacks(on, probe_x=x, probe_y=y)
    assert [type(c).__name__ for c in cbs] == ["ExplosionGuard", "GradientNormMonitor"]
    assert cbs[1].every == 3 and callbacks.GradientNormMonitor is gradients.GradientNormMonitor
    with caplog.at_level(logging.WARNING, logger=monitors.logger.name):
        cbs = monitors.monitor_callbacks(on, probe_x=x)
    assert [type(c).__name__ for c in cbs] == ["ExplosionGuard"]
    assert "gradient_norms_every=3" in caplog.text


def test_records_reach_gradient_norms_json(tmp_path):
    x, y = _data()
    monitor = gradients.GradientNormMonitor(x, y)
    _fit(_mlp(), x, y, monitor, epochs=1)
    assert writers.save_monitor_records([monitor], str(tmp_path)) is None
    saved = json.loads((tmp_path / "gradient_norms.json").read_text())
    assert [r["epoch"] for r in saved] == [0, 1]
    assert set(saved[1]["layers"][0]) == {"name", "grad_norm", "weight_norm"}


def test_multi_output_model_and_its_per_output_losses():
    x, y = _data()

    def two_heads():
        keras.utils.set_random_seed(0)
        inputs = keras.Input((16,))
        h = keras.layers.Dense(32, activation="relu", name="hidden")(inputs)
        model = keras.Model(inputs, {"a": keras.layers.Dense(4, name="a")(h),
                                     "b": keras.layers.Dense(4, name="b")(h)})
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        model.compile(keras.optimizers.SGD(0.05), {"a": loss, "b": loss})
        return model

    plain = _fit(two_heads(), x, {"a": y, "b": y}).history
    monitor = gradients.GradientNormMonitor(x, {"a": y, "b": y})
    watched = _fit(two_heads(), x, {"a": y, "b": y}, monitor).history
    for key in plain:  # the probe does not count in the per-output loss trackers
        assert watched[key] == plain[key], key
    assert [s["name"] for s in monitor.records[0]["layers"]] == ["hidden", "a", "b"]
    assert math.isfinite(watched["grad_norm_ratio"][0])
