import logging
import math
import os

import keras
import matplotlib.image as mpimg
import numpy as np
import pytest
import tensorflow as tf

from recipes import monitors as old_monitors
from recipes.callbacks import monitors


def _data(n=64, shape=(4,), classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, *shape)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, classes, n), classes)
    return x, y


def _mlp(shape=(4,), classes=3, lr=0.01, hidden=8, bias=0.0, optimizer=None):
    inputs = keras.Input(shape)
    x = keras.layers.Flatten()(inputs) if len(shape) > 1 else inputs
    x = keras.layers.Dense(hidden, bias_initializer=keras.initializers.Constant(bias))(x)
    x = keras.layers.Activation("relu", name="act_0")(x)
    model = keras.Model(inputs, keras.layers.Dense(classes)(x))
    model.compile(optimizer or keras.optimizers.SGD(lr),
                  keras.losses.CategoricalCrossentropy(from_logits=True),
                  metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")])
    return model


def _same(a, b):
    return len(a) == len(b) and all(np.array_equal(u, v) for u, v in zip(a, b))


# -- ExplosionGuard ----------------------------------------------------------------------------

def test_batch_loss_recovers_batches_from_running_means():
    losses = [2.3, 2.1, 9.0, 1.5, 4.0]
    means = np.cumsum(losses) / np.arange(1, 6)
    got = [monitors.batch_loss(means[0], 1, 0.0, 0)]
    got += [monitors.batch_loss(means[k], k + 1, means[k - 1], k) for k in range(1, 5)]
    np.testing.assert_allclose(got, losses)
    # steps_per_execution=2: the hook sees batches 2 and 4; the value is the group's mean.
    assert monitors.batch_loss(means[3], 4, means[1], 2) == pytest.approx((9.0 + 1.5) / 2)
    assert math.isnan(monitors.batch_loss(math.nan, 3, means[1], 2))


def test_explosion_reason_rules():
    assert monitors.explosion_reason(6.0, 2.0, 3.0) is None  # equal is not above
    assert monitors.explosion_reason(6.1, 2.0, 3.0).startswith("loss > 3× initial")
    assert monitors.explosion_reason(100.0, 2.0, 0.0) is None  # factor 0: ratio rule off
    assert monitors.explosion_reason(math.inf, 2.0, 0.0).startswith("nan/inf")
    assert monitors.explosion_reason(math.nan, None, 3.0).startswith("nan/inf")
    assert monitors.explosion_reason(100.0, None, 3.0) is None


def _drive(guard, model, losses):
    """Feeds the guard one epoch of Keras-style logs (running means); returns batches seen."""
    guard.set_model(model)
    guard.on_train_begin()
    guard.on_epoch_begin(0)
    total = 0.0
    for k, loss in enumerate(losses):
        total += loss
        guard.on_train_batch_end(k, {"loss": total / (k + 1)})
        if model.stop_training:
            return k + 1
    return len(losses)


@pytest.mark.parametrize("factor, losses, stop_at, reason", [
    (3.0, [2.0, 2.2, 5.9, 6.1, 1.0], 4, "loss > 3× initial"),
    (2.0, [2.0, 2.2, 4.1, 1.0], 3, "loss > 2× initial"),
    (0.0, [2.0, 50.0, 500.0, 1.0], None, ""),
    (0.0, [2.0, 50.0, math.nan, 1.0], 3, "nan/inf"),
    (3.0, [math.inf, 2.0], 1, "nan/inf"),
])
def test_guard_factor_semantics_on_fake_logs(factor, losses, stop_at, reason):
    model = _mlp()
    model.stop_training = False
    guard = monitors.ExplosionGuard(factor)
    seen = _drive(guard, model, losses)
    assert guard.stopped == (stop_at is not None)
    assert guard.reason.startswith(reason)
    if stop_at is not None:
        assert seen == stop_at and guard.stopped_step == stop_at - 1
        assert "at step" in guard.reason
    logs = {"loss": 1.0}
    guard.on_epoch_end(0, logs)
    assert logs["exploded"] == float(stop_at is not None)


def test_guard_rejects_negative_factor():
    with pytest.raises(ValueError, match="factor"):
        monitors.ExplosionGuard(-1)
    with pytest.raises(ValueError, match="initial_loss"):
        monitors.ExplosionGuard(initial_loss=0.0)


def test_guard_on_continued_fit_needs_initial_loss_for_ratio_rule():
    model = _mlp()
    losses = [0.3, 0.8, 1.2, math.nan]  # a trained model's noisy batches, then NaN

    def drive(guard):
        model.stop_training = False
        guard.set_model(model)
        guard.on_train_begin()
        guard.on_epoch_begin(3)  # initial_epoch=3: a resumed run
        total = 0.0
        for k, loss in enumerate(losses):
            total += loss
            guard.on_train_batch_end(k, {"loss": total / (k + 1)})
            if model.stop_training:
                return k
        return None

    guard = monitors.ExplosionGuard()
    assert drive(guard) == 3 and guard.reason.startswith("nan/inf")  # no false 3x stop
    guard = monitors.ExplosionGuard(initial_loss=0.3)
    assert drive(guard) == 2 and guard.reason.startswith("loss > 3× initial")


def test_guard_stops_huge_lr_in_first_epoch_and_restores_initial_weights():
    x, y = _data(128)
    model = _mlp(lr=1e6)
    before = model.get_weights()
    guard = monitors.ExplosionGuard(3.0)
    hist = model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[guard])
    assert guard.stopped and guard.stopped_step < 8  # within the first epoch (8 steps)
    assert guard.reason.startswith(("nan/inf", "loss > 3× initial"))
    assert hist.history["exploded"] == [1.0]
    assert guard.best_epoch == 0 and _same(model.get_weights(), before)


def test_guard_restores_best_epoch_and_leaves_sane_runs_alone():
    x, y = _data(128)
    model = _mlp(lr=0.05)
    kept = {}

    class BlowUpAtEpoch3(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            kept[epoch + 1] = self.model.get_weights()

        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                self.model.optimizer.learning_rate.assign(1e6)

    sane = monitors.ExplosionGuard()
    hist = model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[sane])
    assert not sane.stopped and sane.reason == "" and hist.history["exploded"] == [0.0, 0.0]

    guard = monitors.ExplosionGuard()
    model.fit(x, y, batch_size=16, epochs=5, verbose=0, callbacks=[guard, BlowUpAtEpoch3()])
    assert guard.stopped and 16 <= guard.stopped_step < 24 + 16  # in epoch 3 of this fit
    assert guard.best_epoch in (1, 2)
    assert _same(model.get_weights(), kept[guard.best_epoch])


# -- UpdateRatioMonitor ----------------------------------------------------------------------

def test_update_ratio_matches_hand_computation_with_sgd():
    x, y = _data(32)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3)(inputs))  # kernel + zero bias
    lr = 0.1
    loss_fn = keras.losses.CategoricalCrossentropy(from_logits=True)
    model.compile(keras.optimizers.SGD(lr), loss_fn)
    kernel = model.trainable_weights[0]
    w0 = np.array(kernel)
    with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x))
    g = tape.gradient(loss, kernel.value).numpy()
    expected = np.linalg.norm(lr * g) / np.linalg.norm(w0)

    mon = monitors.UpdateRatioMonitor(every=1)
    hist = model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0, callbacks=[mon])
    # The zero-initialized bias has no ratio at step 0 and is skipped.
    assert [r["step"] for r in mon.records] == [0]
    assert list(mon.records[0]["ratios"]) == [kernel.path]
    assert mon.records[0]["ratios"][kernel.path] == pytest.approx(expected, rel=1e-4)
    for key in ("update_ratio_min", "update_ratio_median", "update_ratio_max"):
        assert hist.history[key][0] == pytest.approx(expected, rel=1e-4)


def test_update_ratio_sampling_schedule_and_single_warning(caplog):
    x, y = _data(80)
    model = _mlp(lr=5.0)  # far too high: median ratio > 1e-2
    mon = monitors.UpdateRatioMonitor(every=3)
    with caplog.at_level(logging.WARNING, logger="recipes.callbacks.monitors"):
        hist = model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[mon])
    assert [r["step"] for r in mon.records] == [0, 3, 6, 9]  # 5 steps per epoch
    assert [r["epoch"] for r in mon.records] == [1, 1, 2, 2]
    assert mon.warning.startswith("epoch 2:") and "too high" in mon.warning  # epoch 1 settles
    assert sum("UpdateRatioMonitor" in r.getMessage() for r in caplog.records) == 1
    assert all(h > 1e-2 for h in hist.history["update_ratio_median"])
    lo, med, hi = monitors.summarize_ratios([{"a": 1.0, "b": 4.0}, {"a": 3.0, "b": 6.0}])
    assert (lo, med, hi) == (2.0, 3.5, 5.0)
    assert monitors.ratio_warning(1e-3) is None and "too low" in monitors.ratio_warning(1e-5)


def test_update_ratio_not_too_low_while_the_schedule_anneals(caplog):
    # The end of a decaying schedule makes tiny updates on purpose: no "too low" warning
    # (it was raised at every cosine run's last epochs); the same tiny rate held from the
    # start is still called too low.
    x, y = _data(80)  # 5 steps per epoch
    annealed = keras.optimizers.schedules.PiecewiseConstantDecay([10], [1e-3, 1e-8])
    runs = {}
    for name, lr in (("annealed", annealed), ("constant", 1e-8)):
        keras.utils.set_random_seed(0)
        model = _mlp(bias=0.1, optimizer=keras.optimizers.SGD(lr))
        mon = monitors.UpdateRatioMonitor(every=1)
        hist = model.fit(x, y, batch_size=16, epochs=4, verbose=0, callbacks=[mon])
        runs[name] = (mon.warning, hist.history["update_ratio_median"])
    warning, medians = runs["annealed"]
    assert medians[1] > 1e-4 > medians[3]  # healthy at the peak, "too low" by the numbers
    assert warning == "", (warning, medians)
    warning, medians = runs["constant"]
    assert max(medians) < 1e-4 and warning.startswith("epoch 2:") and "too low" in warning


# -- ActivationMonitor -------------------------------------------------------------------------

def test_activation_monitor_dead_relu_and_tensorboard(tmp_path):
    x, y = _data(64)
    model = _mlp(bias=-1e3)
    log_dir = tmp_path / "tb"
    mon = monitors.ActivationMonitor(x[:32], every=1, log_dir=str(log_dir))
    hist = model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[mon])
    assert hist.history["act_dead_max"] == [1.0, 1.0]
    assert hist.history["act_std_min"] == [0.0, 0.0]
    assert [r["epoch"] for r in mon.records] == [1, 2]
    assert mon.records[0]["layers"][0]["name"] == "act_0"
    events = [f for f in os.listdir(log_dir) if f.startswith("events.out.tfevents")]
    tags = {(v.tag, e.step) for f in events
            for e in tf.compat.v1.train.summary_iterator(str(log_dir / f)) for v in e.summary.value}
    assert tags == {("activations/act_0", 1), ("activations/act_0", 2)}
    assert not _open_files_under(log_dir)  # the event file is closed at train end


def _open_files_under(directory):
    """Files under ``directory`` this process holds open (Linux's /proc; [] elsewhere)."""
    fds = "/proc/self/fd"
    if not os.path.isdir(fds):
        return []
    targets = []
    for fd in os.listdir(fds):
        try:
            targets.append(os.readlink(os.path.join(fds, fd)))
        except OSError:  # closed meanwhile (the listing's own descriptor)
            pass
    return [t for t in targets if t.startswith(str(directory))]


def test_activation_monitor_every_and_missing_layers():
    x, y = _data(32)
    mon = monitors.ActivationMonitor(x, every=2)
    hist = _mlp().fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[mon])
    assert math.isnan(hist.history["act_mean"][0]) and hist.history["act_dead_max"][1] < 1.0
    inputs = keras.Input((4,))
    plain = keras.Model(inputs, keras.layers.Dense(3, activation="relu")(inputs))
    plain.compile("sgd", "mse")
    with pytest.raises(ValueError, match="activation"):
        plain.fit(x, y, epochs=1, verbose=0, callbacks=[monitors.ActivationMonitor(x)])


# -- FirstLayerWeights -------------------------------------------------------------------------

def test_weights_grid_shapes():
    dense = np.random.default_rng(0).normal(size=(64, 50))
    grid = monitors.weights_grid(dense, (8, 8, 1))  # 50 tiles: 8 per row, 7 rows, 1px gaps
    assert grid.shape == (7 * 9 - 1, 8 * 9 - 1)
    assert grid[:8, :8].min() == 0.0 and grid[:8, :8].max() == 1.0  # tiles scaled each
    rgb = monitors.weights_grid(np.ones((3, 3, 3, 5)) * np.arange(5), None)
    assert rgb.shape == (2 * 4 - 1, 3 * 4 - 1, 3)
    grey = monitors.weights_grid(np.zeros((3, 3, 2, 4)))  # 4 filters x 2 channels
    assert grey.shape == (3 * 4 - 1, 3 * 4 - 1)
    assert monitors.weights_grid(dense).shape == (50, 64)  # no image shape: the matrix
    assert monitors.weights_grid(dense, (4, 4, 1)).shape == (50, 64)
    with pytest.raises(ValueError, match="kernel"):
        monitors.weights_grid(np.zeros((3, 3, 3)))


def test_first_layer_weights_writes_pngs_at_expected_epochs(tmp_path):
    x, y = _data(32, shape=(8, 8, 1), classes=10)
    model = _mlp(shape=(8, 8, 1), classes=10, hidden=50)
    cb = monitors.FirstLayerWeights(str(tmp_path / "w"), every=2)
    model.fit(x, y, batch_size=32, epochs=5, verbose=0, callbacks=[cb])
    names = sorted(os.listdir(tmp_path / "w"))
    assert names == ["first_layer_epoch002.png", "first_layer_epoch004.png"]
    img = mpimg.imread(tmp_path / "w" / names[0])
    scale = math.ceil(256 / 71)
    assert img.shape[:2] == (62 * scale, 71 * scale)


def test_first_layer_weights_conv(tmp_path):
    x, y = _data(16, shape=(8, 8, 3), classes=2)
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(6, 3, name="conv")(inputs)
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inputs, keras.layers.Dense(2)(h))
    model.compile("sgd", keras.losses.CategoricalCrossentropy(from_logits=True))
    assert monitors.first_kernel_layer(model).name == "conv"
    cb = monitors.FirstLayerWeights(str(tmp_path), every=1)
    model.fit(x, y, epochs=1, verbose=0, callbacks=[cb])
    img = mpimg.imread(cb.paths[0])
    scale = math.ceil(256 / 11)
    assert img.shape[:2] == (7 * scale, 11 * scale)  # 6 RGB 3x3 tiles: 3 per row, 2 rows
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp") or f.startswith(".")]


# -- config ------------------------------------------------------------------------------------

def test_callbacks_from_config(tmp_path):
    off = {"explosion_factor": 0.0, "update_ratio_every": 0, "activations_every": 0,
           "first_layer_every": 0, "tensorboard": True}
    cbs = monitors.monitor_callbacks(off)
    assert [type(c).__name__ for c in cbs] == ["ExplosionGuard"] and cbs[0].factor == 0.0
    on = dict(off, update_ratio_every=100, activations_every=1, first_layer_every=5)
    cbs = monitors.monitor_callbacks(on, probe_x=np.zeros((2, 4)), workdir=str(tmp_path))
    assert [type(c).__name__ for c in cbs] == ["ExplosionGuard", "UpdateRatioMonitor",
                                                "ActivationMonitor", "FirstLayerWeights"]
    assert cbs[2].log_dir == os.path.join(str(tmp_path), "tensorboard", "activations")
    with pytest.raises(ValueError, match="probe_x"):
        monitors.monitor_callbacks(on, workdir=str(tmp_path))
    from recipes.configs import base

    cfg = base.get_config().monitor  # all four on by default: cheap enough to leave on
    cbs = monitors.monitor_callbacks(cfg, probe_x=np.zeros((2, 4)), workdir=str(tmp_path))
    names = [type(c).__name__ for c in cbs]
    assert names == ["ExplosionGuard", "UpdateRatioMonitor", "ActivationMonitor",
                     "FirstLayerWeights"]
    assert cbs[0].factor == monitors.EXPLOSION_FACTOR == cfg.explosion_factor


def test_old_module_re_exports_the_monitors():
    for name in old_monitors.__all__:
        if name != "callbacks":
            assert getattr(old_monitors, name) is getattr(monitors, name), name
    assert old_monitors.callbacks is monitors.monitor_callbacks
    assert old_monitors.ExplosionGuard.__module__ == "recipes.callbacks.monitors"


# -- BatchLossRecorder -------------------------------------------------------------------------

def _batches(n=40, batch=8):
    x, y = _data(n, shape=(5,))
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)


def test_recorder_skips_the_validation_pass_of_fit():
    ds = _batches()  # 5 batches
    model = _mlp(shape=(5,), lr=1e-12)
    rec = monitors.BatchLossRecorder()
    model.fit(ds, validation_data=ds.take(2), epochs=2, verbose=0, callbacks=[rec])
    direct = [float(model.evaluate(bx, by, verbose=0)[0]) for bx, by in ds]
    assert rec.losses == pytest.approx(direct * 2, rel=1e-4) and rec.stopped == ""
    rec.losses = []
    model.evaluate(ds, verbose=0, callbacks=[rec])  # evaluate itself is recorded
    assert rec.losses == pytest.approx(direct, rel=1e-4)


def test_recorder_groups_with_steps_per_execution():
    ds = _batches(48)  # 6 batches, 3 whole groups (Keras numbers a last half group oddly)
    model = _mlp(shape=(5,), lr=1e-12)
    model.compile(model.optimizer, model.loss, steps_per_execution=2)
    rec = monitors.BatchLossRecorder()
    model.fit(ds, epochs=1, verbose=0, callbacks=[rec])
    direct = [float(np.ravel(model.evaluate(bx, by, verbose=0))[0]) for bx, by in ds]
    # Keras calls the hook at batches 1, 3 and 5: the mean loss of each group.
    groups = [np.mean(direct[0:2]), np.mean(direct[2:4]), np.mean(direct[4:6])]
    assert rec.losses == pytest.approx(groups, rel=1e-4)


def test_recorder_stops_at_the_explosion_rule():
    model = _mlp(shape=(5,), lr=1e6)
    rec = monitors.BatchLossRecorder(initial=1.0)
    model.fit(_batches(400), epochs=1, verbose=0, callbacks=[rec])
    assert rec.stopped.startswith(("nan/inf", "loss > 3× initial"))
    assert len(rec.losses) < 50  # stopped at the step, not at the end of the epoch
