import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from recipes import callbacks, io, losses, optimizers, schedules

LR = 0.1


def _data(n=32, d=4, c=3):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, c, n), c).astype("float32")
    return x, y


def _model(optimizer, d=4, c=3, loss=None):
    model = keras.Sequential([keras.Input((d,)), keras.layers.Dense(c)])
    model.compile(optimizer, loss or keras.losses.CategoricalCrossentropy(from_logits=True))
    return model


# -- LearningRateLogger --------------------------------------------------------------------

@pytest.mark.parametrize("name", ["step", "cosine", "constant"])
def test_learning_rate_logger_logs_the_scheduled_values(name):
    x, y = _data()  # 4 steps per epoch
    lr = schedules.get({"name": name, "warmup_epochs": 1, "step_epochs": 1, "decay_rate": 0.5},
                       learning_rate=LR, steps_per_epoch=4, epochs=4)
    model = _model(optimizers.get("sgd", learning_rate=lr))
    h = model.fit(x, y, batch_size=8, epochs=4, shuffle=False, verbose=0,
                  callbacks=[callbacks.LearningRateLogger()])
    # The last step of epoch e is t = 4e + 3.
    expected = [float(lr(4 * e + 3)) for e in range(4)]
    np.testing.assert_allclose(h.history["lr"], expected, rtol=1e-6)
    if name == "step":  # warmup ends at LR, then × 0.5 per epoch
        np.testing.assert_allclose(expected, [LR, LR, LR / 2, LR / 4], rtol=1e-6)


def test_learning_rate_logger_reads_a_float_rate():
    x, y = _data()
    model = _model(optimizers.get("adam", learning_rate=0.01))
    h = model.fit(x, y, batch_size=16, epochs=2, verbose=0,
                  callbacks=[callbacks.LearningRateLogger()])
    np.testing.assert_allclose(h.history["lr"], [0.01, 0.01], rtol=1e-6)


# -- MomentumSchedule ----------------------------------------------------------------------

class _RecordStep(keras.callbacks.Callback):
    """Records, per step, weights and velocity before, the gradient, and weights after."""

    def __init__(self, x, y):
        super().__init__()
        self.x, self.y, self.steps = x, y, []

    def on_train_batch_begin(self, batch, logs=None):
        kernel = self.model.layers[0].kernel
        with tf.GradientTape() as tape:
            loss = self.model.loss(self.y, self.model(self.x))
        grad = tape.gradient(loss, kernel).numpy()
        velocity = self.model.optimizer.momentums[0].numpy().copy()
        self.steps.append([kernel.numpy().copy(), velocity, grad])

    def on_train_batch_end(self, batch, logs=None):
        self.steps[-1].append(self.model.layers[0].kernel.numpy().copy())


def test_momentum_schedule_changes_the_compiled_update():
    x, y = _data()
    model = _model(optimizers.get({"name": "momentum", "momentum": 0.9, "learning_rate": LR}))
    ramp = callbacks.MomentumSchedule(start=0.5, end=0.9, epochs=2)
    record = _RecordStep(x, y)
    # Full batch, no shuffle: one step per epoch on the same data, so the gradient is known.
    h = model.fit(x, y, batch_size=len(x), epochs=4, shuffle=False, verbose=0,
                  callbacks=[ramp, record])
    np.testing.assert_allclose(h.history["momentum"], [0.5, 0.7, 0.9, 0.9], rtol=1e-6)
    for epoch, (w, v, g, w_after) in enumerate(record.steps):
        m = ramp.value(epoch)
        # Keras SGD: v <- m v - lr g; w <- w + v.
        np.testing.assert_allclose(w_after - w, m * v - LR * g, rtol=1e-4, atol=1e-6)
        if epoch in (1, 2):  # nonzero velocity and m differs from the other ramp values
            other = 0.9 if m != 0.9 else 0.5
            assert not np.allclose(w_after - w, other * v - LR * g, rtol=1e-4, atol=1e-6)


def test_momentum_schedule_ramps_adam_beta_1():
    x, y = _data()
    model = _model(optimizers.get("adam"))
    h = model.fit(x, y, batch_size=16, epochs=3, verbose=0,
                  callbacks=[callbacks.MomentumSchedule(0.5, 0.9, 2)])
    np.testing.assert_allclose(h.history["momentum"], [0.5, 0.7, 0.9], rtol=1e-6)
    assert model.optimizer.beta_1 == pytest.approx(0.9)


def test_momentum_schedule_refuses_sgd_without_velocity():
    x, y = _data()
    model = _model(optimizers.get("sgd"))
    with pytest.raises(ValueError, match="built with momentum 0"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[callbacks.MomentumSchedule()])


@pytest.mark.parametrize("kwargs", [{"start": 1.0}, {"end": -0.1}, {"epochs": 0}])
def test_momentum_schedule_bad_arguments(kwargs):
    with pytest.raises(ValueError, match="MomentumSchedule"):
        callbacks.MomentumSchedule(**kwargs)


# -- SwitchOptimizer -----------------------------------------------------------------------

def test_switch_optimizer_mid_run(tmp_path):
    x, y = _data()
    model = _model(optimizers.get("adam"), loss=losses.get("svm", 3))
    adam = model.optimizer
    switch = callbacks.SwitchOptimizer(2, {"name": "momentum", "learning_rate": 0.05})
    seen = []

    class Watch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            seen.append((type(self.model.optimizer).__name__,
                         int(self.model.optimizer.iterations),
                         self.model.layers[0].kernel.numpy().copy()))

        def on_epoch_end(self, epoch, logs=None):
            seen[-1] += (self.model.layers[0].kernel.numpy().copy(),)

    h = model.fit(x, y, batch_size=8, epochs=4, verbose=0,
                  callbacks=[switch, Watch(), callbacks.LearningRateLogger()])
    assert [s[:2] for s in seen] == [("Adam", 0), ("Adam", 4), ("SGD", 8), ("SGD", 12)]
    np.testing.assert_array_equal(seen[2][2], seen[1][3])  # the weights carried over
    assert not np.allclose(seen[3][3], seen[2][2])  # and SGD trains them
    sgd = model.optimizer
    assert type(sgd) is keras.optimizers.SGD and sgd.momentum == 0.9
    assert int(sgd.iterations) == 16 and int(adam.iterations) == 8  # Adam stopped at 8
    assert np.abs(sgd.momentums[0].numpy()).sum() > 0  # the new optimizer's velocity is used
    np.testing.assert_allclose(h.history["lr"], [1e-3, 1e-3, 0.05, 0.05], rtol=1e-6)
    assert np.all(np.isfinite(h.history["loss"]))
    path = str(tmp_path / "m.keras")
    model.save(path)
    back = keras.saving.load_model(path, safe_mode=True)
    assert type(back.optimizer) is keras.optimizers.SGD and int(back.optimizer.iterations) == 16


def test_switch_optimizer_bad_arguments():
    with pytest.raises(ValueError, match="epoch must be an integer >= 1, got 0"):
        callbacks.SwitchOptimizer(0, "momentum")
    with pytest.raises(ValueError, match="is not an optimizer"):
        callbacks.SwitchOptimizer(3, {"name": "sgdm"})


# -- writers -------------------------------------------------------------------------------

def test_history_csv_keeps_earlier_epochs_when_resumed(tmp_path):
    path = str(tmp_path / "history.csv")
    writer = callbacks.HistoryCSV(path)
    writer.on_train_begin()
    for epoch in range(3):
        writer.on_epoch_end(epoch, {"loss": 1.0 - epoch / 10})
    # A resumed run restarts at epoch index 2: rows 1 and 2 stay, row 3 is replaced.
    resumed = callbacks.HistoryCSV(path)
    resumed.on_train_begin()
    resumed.on_epoch_end(2, {"loss": 0.5, "lr": 0.1})
    rows = io.read_csv(path)
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert rows[2]["loss"] == "0.5" and rows[2]["lr"] == "0.1" and rows[0]["lr"] == ""
    assert callbacks.first_loss(path) == pytest.approx(1.0)
    assert callbacks.first_loss(str(tmp_path / "none.csv")) is None


def test_backup_keeps_the_epoch_before_its_latest(tmp_path):
    # A multi-worker resume may have to go one epoch back (see test_multi_worker.py), so the
    # backup holds its latest two epochs, and still two when the latest is re-run.
    x, y = _data()
    model = _model(optimizers.get("adam"))
    backup = callbacks.AtomicBackupAndRestore(str(tmp_path / "backup"), delete_checkpoint=False)
    backup.set_model(model)

    def save(epoch):  # the end of epoch `epoch` (1-based), as fit reports it
        backup.on_epoch_end(epoch - 1)
        meta = json.load(open(tmp_path / "backup" / "training_metadata.json"))
        return meta, sorted(f for f in os.listdir(tmp_path / "backup") if f.endswith(".h5"))

    meta, files = save(1)
    assert meta["previous"] is None and files == ["epoch00001.weights.h5"]
    save(2)
    meta, files = save(3)
    assert meta["epoch"] == 3 and meta["previous"]["epoch"] == 2
    assert files == ["epoch00002.weights.h5", "epoch00003.weights.h5"]
    meta, files = save(3)  # epoch 3 re-run after a restore from epoch 2
    assert meta["previous"]["epoch"] == 2
    assert files == ["epoch00002.weights.h5", "epoch00003.weights.h5"]
    resumed = callbacks.AtomicBackupAndRestore(str(tmp_path / "backup"),
                                               delete_checkpoint=False)
    h = model.fit(x, y, epochs=5, verbose=0, callbacks=[resumed])
    assert h.epoch == [3, 4]  # resumed after epoch 3


def test_best_model_checkpoint_keeps_the_best_across_a_resume(tmp_path):
    x, y = _data()
    model = _model(optimizers.get("sgd"))
    path, history = str(tmp_path / "best.keras"), str(tmp_path / "history.csv")
    io.write_csv(history, [{"epoch": 1, "val_loss": 0.5}, {"epoch": 2, "val_loss": 0.2}],
                 ["epoch", "val_loss"])
    best = callbacks.BestModelCheckpoint(path, "val_loss", history)
    best.set_model(model)
    best.on_train_begin()
    best.on_epoch_end(2, {"val_loss": 0.3})  # worse than epoch 2's, read from the history
    assert not os.path.exists(path) and best.best_epoch == 2
    best.on_epoch_end(3, {"val_loss": 0.1})
    assert best.best_epoch == 4 and os.path.exists(path)
    assert keras.saving.load_model(path, safe_mode=True).count_params() == model.count_params()


def test_records_writer_keeps_a_resumed_runs_earlier_epochs(tmp_path):
    path = str(tmp_path / "update_ratios.json")
    callbacks.writers.write_records(path, [{"epoch": 1, "a": 1}, {"epoch": 2, "a": 2}])
    callbacks.writers.write_records(path, [{"epoch": 2, "a": 3}])  # epoch 2 re-run
    assert io.read_json(path, what="records") == [{"epoch": 1, "a": 1}, {"epoch": 2, "a": 3}]
    mon, guard = callbacks.UpdateRatioMonitor(every=1), callbacks.ExplosionGuard()
    mon.records = [{"epoch": 3, "step": 0, "ratios": {}}]
    writer = callbacks.RecordsWriter(str(tmp_path), [guard, mon])
    writer.on_epoch_end(2)
    assert [r["epoch"] for r in io.read_json(path, what="records")] == [1, 2, 3]
    assert callbacks.save_monitor_records([guard, mon], str(tmp_path)) is None


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_save_clock_is_due_once_its_seconds_have_passed_and_at_the_last_epoch():
    t = FakeClock()
    clock = callbacks.SaveClock(10.0, clock=t)
    clock.set_params({"epochs": 5})
    clock.on_train_begin()
    due = []
    for epoch, now in enumerate([4.0, 9.0, 12.0, 15.0, 16.0]):
        t.now = now
        clock.on_epoch_end(epoch)
        due.append(clock.due)
    assert due == [False, False, True, False, True]  # 12 s since 0; the last epoch
    zero = callbacks.SaveClock(0.0, clock=t)
    zero.set_params({"epochs": 5})
    zero.on_train_begin()
    zero.on_epoch_end(0)
    assert zero.due
    with pytest.raises(ValueError, match="every_seconds"):
        callbacks.SaveClock(-1.0)


def _not_due():
    clock = callbacks.SaveClock(1e9, clock=FakeClock())
    clock.set_params({"epochs": 10})
    clock.on_train_begin()
    clock.on_epoch_end(0)
    assert not clock.due
    return clock


def test_writers_hold_their_writes_until_the_clock_or_the_end(tmp_path):
    clock = _not_due()
    x, y = _data()
    model = _model(optimizers.get("sgd"))
    history = callbacks.HistoryCSV(str(tmp_path / "history.csv"), clock)
    backup = callbacks.AtomicBackupAndRestore(str(tmp_path / "backup"), clock=clock,
                                              delete_checkpoint=False)
    mon = callbacks.UpdateRatioMonitor(every=1)
    mon.records = [{"epoch": 1, "step": 0, "ratios": {}}]
    records = callbacks.RecordsWriter(str(tmp_path), [mon], clock)
    for cb in (history, backup, records):
        cb.set_model(model)
    history.on_train_begin()
    for cb in (history, backup, records):
        cb.on_epoch_end(0, {"loss": 1.0})
    assert not list(tmp_path.iterdir())  # nothing written between two ticks
    for cb in (history, backup, records):
        cb.on_train_end()
    assert [r["epoch"] for r in io.read_csv(str(tmp_path / "history.csv"))] == ["1"]
    assert json.load(open(tmp_path / "backup" / "training_metadata.json"))["epoch"] == 1
    assert os.path.exists(tmp_path / "update_ratios.json")


def test_best_checkpoint_between_ticks_keeps_the_best_epochs_weights(tmp_path):
    clock = _not_due()
    model = _model(optimizers.get("sgd"))
    best = callbacks.BestModelCheckpoint(str(tmp_path / "best.keras"), "val_loss", "", clock)
    best.set_model(model)
    best.on_train_begin()
    kept = [w.copy() for w in model.get_weights()]
    best.on_epoch_end(0, {"val_loss": 0.5})
    model.set_weights([w + 1.0 for w in kept])  # epoch 2 trains on, and is worse
    best.on_epoch_end(1, {"val_loss": 0.9})
    assert not os.path.exists(tmp_path / "best.keras") and best.best_epoch == 1
    best.on_train_end()
    saved = keras.saving.load_model(str(tmp_path / "best.keras"), safe_mode=True)
    for a, b in zip(saved.get_weights(), kept):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(model.get_weights(), kept):  # the model keeps its own last weights
        np.testing.assert_array_equal(a, b + 1.0)


def test_a_quiet_run_says_how_far_it_is_every_so_often():
    t, lines = FakeClock(), []
    eta = callbacks.EpochETA(lines.append, "training", every_seconds=10.0, clock=t)
    eta.set_params({"epochs": 6})
    eta.on_train_begin()
    for epoch, now in enumerate([4.0, 8.0, 12.0, 16.0, 24.0, 30.0]):
        t.now = now
        eta.on_epoch_end(epoch)
    # 12 s after the start (epoch 3 of 6: eta 12 s), 24 s (epoch 5: eta 5 s); never at the end
    assert [line.strip() for line in lines] == ["training: epoch 3/6, 12 s, eta 12 s",
                                                "training: epoch 5/6, 24 s, eta 5 s"]

def test_the_epoch_line_shows_what_a_person_reads():
    logs = {"loss": 1.0, "accuracy": 0.5, "val_loss": 1.1, "val_accuracy": 0.4, "lr": 0.1,
            "learning_rate": 0.1, "act_dead_max": 0.0, "grad_norm_ratio": 1.0,
            "update_ratio_median": 1e-3, "exploded": 0.0, "momentum": 0.9,
            "val_tta_accuracy": 0.45}
    assert list(callbacks.readable(logs)) == ["loss", "accuracy", "val_loss", "val_accuracy",
                                              "lr", "val_tta_accuracy"]
    assert "learning_rate" in callbacks.readable({"learning_rate": 0.1})  # no lr: keep it


# -- the package's names -------------------------------------------------------------------

def test_inner_optimizer_unwraps_a_loss_scale_optimizer():
    sgd = optimizers.get("sgd", learning_rate=0.25)
    assert callbacks.inner_optimizer(sgd) is sgd
    assert callbacks.inner_optimizer(keras.optimizers.LossScaleOptimizer(sgd)) is sgd
    assert callbacks.learning_rate_schedule(sgd) is None
    assert callbacks.learning_rate_used(sgd) == pytest.approx(0.25)


def test_old_names_still_import():
    from recipes import lr_range, monitors, train

    assert lr_range.BatchLossRecorder is callbacks.BatchLossRecorder
    assert lr_range.EXPLODE_FACTOR == callbacks.EXPLOSION_FACTOR
    assert monitors.ExplosionGuard is callbacks.ExplosionGuard
    assert train.HistoryCSV is callbacks.HistoryCSV
    assert train.AtomicBackupAndRestore is callbacks.AtomicBackupAndRestore
    assert train.checkpoint_bytes is callbacks.checkpoint_bytes


# -- MomentumCycle (one_cycle / triangular) and AveragedWeights (optimizer.ema) -------------

from recipes.callbacks import build_callbacks  # noqa: E402
from recipes.callbacks.optimizer import AveragedWeights, MomentumCycle  # noqa: E402
from recipes.configs import base  # noqa: E402


def _one_cycle(steps_per_epoch, epochs, high=0.95):
    lr = schedules.get("one_cycle", learning_rate=LR, steps_per_epoch=steps_per_epoch,
                       epochs=epochs)
    values = schedules.momentum_values("one_cycle", momentum=high,
                                       steps_per_epoch=steps_per_epoch, epochs=epochs)
    return lr, values


def _rate(lr, t):
    return float(keras.ops.convert_to_numpy(lr(keras.ops.convert_to_tensor(t, "int64"))))


def test_momentum_cycle_changes_the_compiled_sgd_update_every_step():
    x, y = _data()
    lr, values = _one_cycle(1, 6)
    model = _model(optimizers.get({"name": "momentum", "momentum": 0.95}, learning_rate=lr))
    record = _RecordStep(x, y)
    h = model.fit(x, y, batch_size=len(x), epochs=6, shuffle=False, verbose=0,
                  callbacks=[MomentumCycle(values), record])
    np.testing.assert_allclose(h.history["momentum"], [values(t) for t in range(6)], rtol=1e-6)
    for t, (w, v, g, w_after) in enumerate(record.steps):
        # Keras SGD with this step's momentum and learning rate: v <- m v - lr g; w += v.
        np.testing.assert_allclose(w_after - w, values(t) * v - _rate(lr, t) * g,
                                   rtol=1e-4, atol=1e-7)
        if t in (1, 2, 4):  # velocity built up: another step's momentum would show
            assert not np.allclose(w_after - w, values(t + 1) * v - _rate(lr, t) * g,
                                   rtol=1e-4, atol=1e-7)
    assert isinstance(model.optimizer.momentum, float)  # a float again for saving


@pytest.mark.parametrize("name", ["momentum", "adam"])
def test_momentum_cycle_per_batch_opposite_to_the_learning_rate(tmp_path, name):
    x, y = _data()
    lr, values = _one_cycle(4, 3)
    model = _model(optimizers.get({"name": name, "momentum": 0.95, "beta_1": 0.95},
                                  learning_rate=lr))
    attr = "beta_1" if name == "adam" else "momentum"
    seen = []

    class Read(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            opt = self.model.optimizer
            seen.append((float(getattr(opt, attr)), callbacks.learning_rate_used(opt)))

    model.fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[MomentumCycle(values), Read()])
    moms, rates = np.array(seen).T
    np.testing.assert_allclose(moms, [values(t) for t in range(12)], rtol=1e-6)
    assert len(set(np.round(moms, 6))) > 6  # it changes within epochs, not once per epoch
    dm, dr = np.diff(moms), np.diff(rates)
    assert np.all(np.sign(dm[np.abs(dr) > 1e-9]) == -np.sign(dr[np.abs(dr) > 1e-9]))
    model.save(str(tmp_path / "m.keras"))  # the optimizer config holds a float again
    back = keras.saving.load_model(str(tmp_path / "m.keras"), safe_mode=True)
    assert getattr(back.optimizer, attr) == pytest.approx(values(11))
    assert len(back.optimizer.variables) == len(model.optimizer.variables)


def test_momentum_cycle_refuses_sgd_without_velocity():
    x, y = _data()
    _, values = _one_cycle(4, 1)
    model = _model(optimizers.get("sgd"))
    with pytest.raises(ValueError, match="MomentumCycle: SGD was built with momentum 0"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[MomentumCycle(values)])


def _ema_fit(ema, epochs=3, cbs=(), **fit):
    x, y = _data()
    keras.utils.set_random_seed(0)
    model = _model(optimizers.get({"name": "momentum", "learning_rate": LR, "ema": ema}))
    h = model.fit(x, y, batch_size=8, epochs=epochs, shuffle=False, verbose=0,
                  validation_data=(x[:16], y[:16]), callbacks=list(cbs), **fit)
    return model, h


class _RawAtEpochEnd(keras.callbacks.Callback):
    """The model's own (not averaged) weights and the average at each epoch end."""

    def __init__(self):
        super().__init__()
        self.raw, self.average = [], []

    def on_epoch_end(self, epoch, logs=None):
        opt = self.model.optimizer
        self.raw.append([w.numpy().copy() for w in self.model.trainable_weights])
        self.average.append([v.numpy().copy() for v in opt._model_variables_moving_average])


def test_ema_model_ends_with_the_averaged_weights_and_validates_on_them():
    record = _RawAtEpochEnd()
    model, h = _ema_fit(0.9, cbs=[record, AveragedWeights()])
    for w, a in zip(model.trainable_weights, record.average[-1]):
        np.testing.assert_allclose(w.numpy(), a, rtol=1e-6)
    for w, v in zip(model.trainable_weights, model.optimizer._model_variables_moving_average):
        np.testing.assert_allclose(w.numpy(), v.numpy(), rtol=1e-6)
    plain, _ = _ema_fit(0.0)
    assert not np.allclose(model.get_weights()[0], plain.get_weights()[0])
    # val_loss is the averaged weights' loss, not the raw weights'.
    x, y = _data()
    assert model.evaluate(x[:16], y[:16], verbose=0) == pytest.approx(h.history["val_loss"][-1],
                                                                      rel=1e-5)
    model.set_weights(record.raw[-1])
    assert model.evaluate(x[:16], y[:16], verbose=0) != pytest.approx(h.history["val_loss"][-1],
                                                                      rel=1e-3)


def test_ema_best_checkpoint_holds_the_validated_averaged_weights(tmp_path):
    record = _RawAtEpochEnd()
    best = callbacks.BestModelCheckpoint(str(tmp_path / "best.keras"), "val_loss")
    _, h = _ema_fit(0.9, cbs=[record, AveragedWeights(), best])
    epoch = int(np.argmin(h.history["val_loss"]))
    saved = keras.saving.load_model(str(tmp_path / "best.keras"), safe_mode=True)
    for w, a in zip(saved.trainable_weights, record.average[epoch]):
        np.testing.assert_allclose(w.numpy(), a, rtol=1e-6)
    x, y = _data()
    assert saved.evaluate(x[:16], y[:16], verbose=0) == pytest.approx(
        h.history["val_loss"][epoch], rel=1e-5)


def test_ema_early_stop_still_ends_with_the_averaged_weights():
    record = _RawAtEpochEnd()

    class StopAfterFirst(keras.callbacks.Callback):  # placed after, like EarlyStopping
        def on_epoch_end(self, epoch, logs=None):
            self.model.stop_training = True

    model, h = _ema_fit(0.9, epochs=3, cbs=[record, AveragedWeights(), StopAfterFirst()])
    assert len(h.history["loss"]) == 1
    for w, a in zip(model.trainable_weights, record.average[0]):
        np.testing.assert_allclose(w.numpy(), a, rtol=1e-6)


def test_build_callbacks_adds_the_average_and_the_momentum_cycle():
    cfg = base.get_config()
    cfg.optimizer.update(name="momentum", ema=0.99)
    cfg.schedule.name = "one_cycle"
    names = [type(c).__name__ for c in build_callbacks(cfg, steps_per_epoch=4)]
    assert names == ["LearningRateLogger", "AveragedWeights", "MomentumCycle"]
    cfg.optimizer.name = "sgd"  # no momentum to cycle
    cfg.optimizer.ema = 0.0
    assert [type(c).__name__ for c in build_callbacks(cfg, steps_per_epoch=4)] == [
        "LearningRateLogger"]


@pytest.mark.parametrize("overrides, match", [
    ({"optimizer.ema": 0.99, "optimizer.switch_to": "adam", "optimizer.switch_epoch": 1},
     r"optimizer.ema with optimizer.switch_to"),
    ({"schedule.name": "one_cycle", "optimizer.name": "momentum",
      "optimizer.momentum_epochs": 2}, r"schedule.momentum_cycle with optimizer.momentum_epochs"),
    ({"schedule.name": "one_cycle", "optimizer.name": "adam", "optimizer.beta_1": 0.8},
     r"schedule.momentum_low must be in \[0, 0.8\)"),
])
def test_build_callbacks_refuses_what_would_fight(overrides, match):
    cfg = base.get_config()
    for path, value in overrides.items():
        branch, field = path.split(".")
        cfg[branch][field] = value
    with pytest.raises(ValueError, match=match):
        build_callbacks(cfg, steps_per_epoch=4)


def test_ema_run_resumed_from_a_backup_trains_on_as_if_never_stopped(tmp_path):
    class Kill(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                raise KeyboardInterrupt("killed")

    def run(backup, *extra):
        return _ema_fit(0.9, epochs=4, cbs=[AveragedWeights(), *extra,
                                            callbacks.AtomicBackupAndRestore(str(backup))])

    whole, _ = run(tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", Kill())
    resumed, h = run(tmp_path / "b")
    assert len(h.history["loss"]) == 2  # epochs 3 and 4 only
    for a, b in zip(whole.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
