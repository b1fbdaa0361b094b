import json
import math

import keras
import numpy as np
import pytest

from recipes import callbacks, optimizers, schedules

LR, SPE, EPOCHS = 0.1, 10, 12
T = SPE * EPOCHS
CFG = {"decay_rate": 0.5, "step_epochs": 3, "epoch_decay": 0.9, "cycles": 3, "alpha": 0.1}
STEPS = (0, 1, 9, 10, 11, 29, 30, 31, 55, 60, 89, 90, 100, T - 1)


def closed_form(name: str, t: float, total: float) -> float:
    """The lecture's / paper's formula, t and total in steps."""
    e = t / SPE  # epochs, continuous
    if name in ("constant", "plateau"):
        return LR
    if name == "step":
        return LR * 0.5 ** math.floor(e / 3)
    if name == "epoch_decay":
        return LR * 0.9 ** math.floor(e)
    if name == "exponential":
        return LR * math.exp(-0.5 * e)
    if name == "inverse":
        return LR / (1 + 0.5 * e)
    if name == "inverse_sqrt":
        return LR / math.sqrt(1 + e)
    if name == "linear":
        return LR * (1 - t / total)
    if name == "sqrt_linear":
        return LR * math.sqrt(1 - t / total)
    if name == "cosine":
        return LR * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t / total)))
    if name == "cosine_restarts":
        period = total / 3
        return LR * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (t % period) / period)))
    if name == "one_cycle":
        return one_cycle_reference(t / total, 0.25, LR / 25, LR, LR / 25 / 1e5)
    if name == "triangular":
        return triangular_reference(t, total / 3, LR / 4, LR)
    raise AssertionError(name)


def one_cycle_reference(pos: float, pct: float, start: float, peak: float, end: float) -> float:
    """fastai's ``combine_scheds([pct, 1 - pct], [SchedCos(start, peak), SchedCos(peak, end)])``
    at ``pos`` = the fraction of training done (numpy, float64)."""
    def sched_cos(a, b, p):
        return a + (1 + np.cos(np.pi * (1 - p))) * (b - a) / 2
    if pos < pct:
        return float(sched_cos(start, peak, pos / pct))
    return float(sched_cos(peak, end, min((pos - pct) / (1 - pct), 1.0)))


def triangular_reference(t: float, period: float, low: float, high: float) -> float:
    """Smith 2017's triangular policy: stepsize = period/2, ``cycle`` and ``x`` as in the paper."""
    stepsize = period / 2
    cycle = np.floor(1 + t / (2 * stepsize))
    x = abs(t / stepsize - 2 * cycle + 1)
    return float(low + (high - low) * max(0.0, 1 - x))


def expected(name: str, t: int, warmup_steps: int) -> float:
    if t < warmup_steps:
        return LR * (t + 1) / warmup_steps
    return closed_form(name, t - warmup_steps, T - warmup_steps)


def evaluate(lr, t: int) -> float:
    if isinstance(lr, float):
        return lr
    return float(keras.ops.convert_to_numpy(lr(keras.ops.convert_to_tensor(t, "int64"))))


def test_names_are_the_config_vocabulary():
    assert schedules.NAMES == ("constant", "step", "epoch_decay", "exponential", "inverse",
                               "inverse_sqrt", "linear", "sqrt_linear", "cosine",
                               "cosine_restarts", "one_cycle", "triangular", "plateau")
    assert schedules.CYCLIC == ("one_cycle", "triangular")


@pytest.mark.parametrize("warmup_epochs", [0, 2])
@pytest.mark.parametrize("name", schedules.NAMES)
def test_values_equal_closed_form(name, warmup_epochs):
    if warmup_epochs and name in schedules.CYCLIC:  # they warm up by themselves
        with pytest.raises(ValueError, match="set schedule.warmup_epochs=0"):
            schedules.get({"name": name, "warmup_epochs": warmup_epochs}, learning_rate=LR,
                          steps_per_epoch=SPE, epochs=EPOCHS)
        return
    lr = schedules.get({"name": name, "warmup_epochs": warmup_epochs, **CFG},
                       learning_rate=LR, steps_per_epoch=SPE, epochs=EPOCHS)
    w = warmup_epochs * SPE if name != "plateau" else 0  # plateau's warmup is a callback
    table = [(t, expected(name, t, w)) for t in STEPS]
    got = [(t, evaluate(lr, t)) for t in STEPS]
    np.testing.assert_allclose([v for _, v in got], [v for _, v in table], rtol=1e-5,
                               atol=1e-7, err_msg=f"{name} warmup={warmup_epochs}: {got}")


@pytest.mark.parametrize("name", ["constant", "plateau"])
def test_float_for_settable_learning_rate(name):
    lr = schedules.get(name, learning_rate=LR, steps_per_epoch=SPE, epochs=EPOCHS)
    assert isinstance(lr, float) and lr == LR


def test_warmup_starts_near_zero_and_reaches_peak():
    lr = schedules.get({"name": "cosine", "warmup_epochs": 5}, learning_rate=LR,
                       steps_per_epoch=SPE, epochs=EPOCHS)
    assert isinstance(lr, schedules.LinearWarmup)
    assert evaluate(lr, 0) == pytest.approx(LR / 50)
    assert evaluate(lr, 49) == pytest.approx(LR) and evaluate(lr, 50) == pytest.approx(LR)
    assert np.all(np.diff([evaluate(lr, t) for t in range(50)]) > 0)


def test_fractional_warmup_and_inverse_sqrt_finite_at_zero():
    lr = schedules.get({"name": "inverse_sqrt", "warmup_epochs": 0.25}, learning_rate=LR,
                       steps_per_epoch=SPE, epochs=EPOCHS)
    assert lr.warmup_steps == 2  # round(0.25 * 10)
    plain = schedules.get("inverse_sqrt", learning_rate=LR, steps_per_epoch=SPE, epochs=1)
    assert evaluate(plain, 0) == pytest.approx(LR)


@pytest.mark.parametrize("warmup_epochs", [0, 1])
@pytest.mark.parametrize("name", [n for n in schedules.NAMES if n != "plateau"])
def test_serialization_round_trip(name, warmup_epochs):
    if warmup_epochs and name in schedules.CYCLIC:
        return  # refused (test_values_equal_closed_form)
    lr = schedules.get({"name": name, "warmup_epochs": warmup_epochs, **CFG},
                       learning_rate=LR, steps_per_epoch=SPE, epochs=EPOCHS)
    if isinstance(lr, float):  # constant without warmup: nothing to serialize
        assert name == "constant" and warmup_epochs == 0
        return
    config = json.loads(json.dumps(keras.optimizers.schedules.serialize(lr)))
    back = keras.saving.deserialize_keras_object(config, safe_mode=True)
    assert type(back) is type(lr)
    for t in STEPS:
        assert evaluate(back, t) == pytest.approx(evaluate(lr, t), rel=1e-6)


def _data(n=32, d=4, c=3):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, c, n), c).astype("float32")
    return x, y


def _model(d=4, c=3, use_bias=True):
    return keras.Sequential([keras.Input((d,)), keras.layers.Dense(c, use_bias=use_bias)])


def test_model_with_babysit_schedule_saves_and_reloads_in_safe_mode(tmp_path):
    x, y = _data()
    lr = schedules.get({"name": "inverse_sqrt", "warmup_epochs": 1}, learning_rate=LR,
                       steps_per_epoch=4, epochs=3)
    model = _model()
    model.compile(optimizers.get("momentum", learning_rate=lr),
                  keras.losses.CategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    path = str(tmp_path / "m.keras")
    model.save(path)
    back = keras.saving.load_model(path, safe_mode=True)
    sched = back.optimizer._learning_rate
    assert isinstance(sched, schedules.LinearWarmup)
    assert isinstance(sched.schedule, schedules.InverseSqrtDecay)
    assert int(back.optimizer.iterations) == 4
    for t in (0, 3, 4, 11):
        assert evaluate(sched, t) == pytest.approx(evaluate(lr, t))


def test_plateau_callback_lowers_float_learning_rate_in_fit():
    x, y = _data()
    # No bias and zero validation inputs: val_loss = log(3) every epoch, never improving.
    val = (np.zeros_like(x), y)
    cfg = {"name": "plateau", "plateau_factor": 0.5, "plateau_patience": 1}
    lr = schedules.get(cfg, learning_rate=LR, steps_per_epoch=4, epochs=3)
    cbs = schedules.callbacks(cfg)
    assert [type(c) for c in cbs] == [keras.callbacks.ReduceLROnPlateau]
    model = _model(use_bias=False)
    model.compile(optimizers.get("sgd", learning_rate=lr),
                  keras.losses.CategoricalCrossentropy(from_logits=True))
    h = model.fit(x, y, batch_size=8, epochs=3, validation_data=val, verbose=0,
                  callbacks=[callbacks.LearningRateLogger(), *cbs])
    np.testing.assert_allclose(h.history["lr"], [LR, LR, LR / 2], rtol=1e-6)
    assert float(model.optimizer.learning_rate) == pytest.approx(LR / 4)


def test_plateau_with_warmup_ramps_then_holds():
    x, y = _data()
    cfg = {"name": "plateau", "warmup_epochs": 1, "plateau_patience": 100}
    cbs = schedules.callbacks(cfg)
    assert isinstance(cbs[0], schedules.LinearWarmupCallback)
    seen = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            seen.append(float(self.model.optimizer.learning_rate))

    model = _model()
    model.compile(optimizers.get("sgd", learning_rate=LR),
                  keras.losses.CategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=8, epochs=2, validation_data=(x, y), verbose=0,
              callbacks=[*cbs, Record()])
    np.testing.assert_allclose(seen, [LR / 4, LR / 2, 3 * LR / 4, LR, LR, LR, LR, LR],
                               rtol=1e-6)


def test_callbacks_empty_for_schedules():
    assert schedules.callbacks({"name": "cosine"}) == []


@pytest.mark.parametrize("kwargs, match", [
    ({"learning_rate": -1.0}, r"optimizer.learning_rate must be > 0, got -1.0"),
    ({"steps_per_epoch": 0}, r"steps_per_epoch must be an integer >= 1, got 0"),
    ({"epochs": 0}, r"train.epochs must be an integer >= 1, got 0"),
    ({"cfg": {"name": "cosine", "warmup_epochs": 12}}, r"schedule.warmup_epochs .* got 12"),
    ({"cfg": {"name": "exponential", "decay_rate": 0.0}}, r"schedule.decay_rate must be > 0"),
    ({"cfg": {"name": "step", "decay_rate": 2.0}}, r"schedule.decay_rate must be in \(0, 1\]"),
    ({"cfg": {"name": "cosine_restarts", "cycles": 0}}, r"schedule.cycles .* got 0"),
    ({"cfg": {"name": "cosine", "alpha": 1.5}}, r"schedule.alpha .* got 1.5"),
    ({"cfg": {"name": "plateau", "plateau_factor": 1.0}}, r"schedule.plateau_factor"),
    ({"cfg": {"name": "bogus"}}, r"'bogus' is not a schedule; use one of \['constant'"),
    ({"cfg": {"name": "cosine", "decay": 1}}, r"unknown field\(s\) schedule.decay"),
])
def test_bad_arguments_raise_with_the_value(kwargs, match):
    args = {"cfg": "constant", "learning_rate": LR, "steps_per_epoch": SPE, "epochs": EPOCHS}
    args.update(kwargs)
    cfg = args.pop("cfg")
    with pytest.raises(ValueError, match=match):
        schedules.get(cfg, **args)


def test_config_dict_branch_with_defaults():
    from recipes.configs import base

    c = base.get_config().schedule
    c.name = "step"
    lr = schedules.get(c, learning_rate=LR, steps_per_epoch=SPE, epochs=30)
    assert evaluate(lr, 99) == pytest.approx(LR) and evaluate(lr, 100) == pytest.approx(LR / 10)


# -- cyclical schedules: one_cycle (Smith & Topin 2018), triangular (Smith 2017) -------------

def test_one_cycle_table_start_peak_and_end():
    cfg = {"name": "one_cycle", "pct_start": 0.3, "div": 10.0, "div_final": 1e4}
    lr = schedules.get(cfg, learning_rate=LR, steps_per_epoch=SPE, epochs=EPOCHS)
    assert isinstance(lr, schedules.OneCycle)
    steps = np.arange(T + 1)
    got = np.array([evaluate(lr, t) for t in steps])
    want = [one_cycle_reference(t / T, 0.3, LR / 10, LR, LR / 1e5) for t in steps]
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-9)
    assert got[0] == pytest.approx(LR / 10) and got[T] == pytest.approx(LR / 1e5, rel=1e-5)
    assert int(np.argmax(got)) == round(0.3 * T) and got.max() == pytest.approx(LR)
    assert np.all(np.diff(got[:36]) > 0) and np.all(np.diff(got[36:]) < 0)
    assert evaluate(lr, 10 * T) == pytest.approx(LR / 1e5, rel=1e-5)  # past the end: holds


def test_one_cycle_defaults_are_fastais():
    lr = schedules.get("one_cycle", learning_rate=LR, steps_per_epoch=SPE, epochs=EPOCHS)
    assert (lr.pct_start, lr.div, lr.div_final) == (0.25, 25.0, 1e5)
    assert evaluate(lr, 0) == pytest.approx(LR / 25) and evaluate(lr, 30) == pytest.approx(LR)
    assert evaluate(lr, T) == pytest.approx(LR / 25 / 1e5, rel=1e-5)


def test_triangular_goes_up_and_down_cycles_times():
    lr = schedules.get({"name": "triangular", "cycles": 2, "div": 5.0}, learning_rate=LR,
                       steps_per_epoch=SPE, epochs=EPOCHS)
    assert isinstance(lr, schedules.Triangular)
    got = np.array([evaluate(lr, t) for t in range(T)])
    np.testing.assert_allclose(got, [triangular_reference(t, 60, LR / 5, LR) for t in range(T)],
                               rtol=1e-5)
    # Two cycles of 60 steps: lows at 0 and 60, peaks at 30 and 90, linear in between.
    assert [got[0], got[30], got[60], got[90]] == pytest.approx([LR / 5, LR, LR / 5, LR])
    assert np.all(np.diff(got[:31]) > 0) and np.all(np.diff(got[30:61]) < 0)
    np.testing.assert_allclose(np.diff(got[:30]), (LR - LR / 5) / 30, rtol=1e-4)
    np.testing.assert_allclose(got[:60], got[60:], rtol=1e-5)


def test_triangular_default_div_is_smiths():
    lr = schedules.get("triangular", learning_rate=LR, steps_per_epoch=SPE, epochs=EPOCHS)
    assert lr.div == 4.0 and lr.cycles == 3


@pytest.mark.parametrize("name", schedules.CYCLIC)
def test_momentum_goes_opposite_to_the_learning_rate(name):
    cfg = {"name": name, "momentum_low": 0.85}
    lr = schedules.get(cfg, learning_rate=LR, steps_per_epoch=SPE, epochs=EPOCHS)
    mom = schedules.momentum_values(cfg, momentum=0.95, steps_per_epoch=SPE, epochs=EPOCHS)
    rates = np.array([evaluate(lr, t) for t in range(T)])
    moms = np.array([mom(t) for t in range(T)])
    assert moms.max() == pytest.approx(0.95) and moms.min() == pytest.approx(0.85)
    assert int(np.argmin(moms)) == int(np.argmax(rates))
    up, down = np.diff(rates) > 1e-9, np.diff(rates) < -1e-9
    assert np.all(np.diff(moms)[up] < 0) and np.all(np.diff(moms)[down] > 0)
    if name == "one_cycle":  # fastai: the same two half cosines, 0.95 -> 0.85 -> 0.95
        want = [one_cycle_reference(t / T, 0.25, 0.95, 0.85, 0.95) for t in range(T)]
        np.testing.assert_allclose(moms, want, rtol=1e-6)


def test_no_momentum_cycle_when_off_or_not_cyclical():
    kw = {"momentum": 0.9, "steps_per_epoch": SPE, "epochs": EPOCHS}
    assert schedules.momentum_values({"name": "one_cycle", "momentum_cycle": False}, **kw) is None
    assert schedules.momentum_values({"name": "cosine"}, **kw) is None


@pytest.mark.parametrize("cls, kwargs", [
    (schedules.OneCycle, {"max_learning_rate": 0.5, "total_steps": 40, "pct_start": 0.4,
                          "div": 10.0, "div_final": 100.0}),
    (schedules.Triangular, {"max_learning_rate": 0.5, "total_steps": 40, "cycles": 4,
                            "div": 3.0}),
])
def test_cyclical_serialize_keras_object_round_trip(cls, kwargs):
    lr = cls(**kwargs)
    config = json.loads(json.dumps(keras.saving.serialize_keras_object(lr)))
    assert config["registered_name"] == f"babysit>{cls.__name__}"
    back = keras.saving.deserialize_keras_object(config, safe_mode=True)
    assert type(back) is cls and back.get_config() == lr.get_config()
    for t in (0, 7, 16, 33, 40):
        assert evaluate(back, t) == pytest.approx(evaluate(lr, t), rel=1e-6)


@pytest.mark.parametrize("name", schedules.CYCLIC)
def test_model_with_cyclical_schedule_saves_and_reloads_in_safe_mode(tmp_path, name):
    x, y = _data()
    lr = schedules.get(name, learning_rate=LR, steps_per_epoch=4, epochs=3)
    model = _model()
    model.compile(optimizers.get("momentum", learning_rate=lr),
                  keras.losses.CategoricalCrossentropy(from_logits=True))
    h = model.fit(x, y, batch_size=8, epochs=2, verbose=0,
                  callbacks=[callbacks.LearningRateLogger()])
    np.testing.assert_allclose(h.history["lr"], [evaluate(lr, 3), evaluate(lr, 7)], rtol=1e-6)
    path = str(tmp_path / "m.keras")
    model.save(path)
    back = keras.saving.load_model(path, safe_mode=True)
    sched = back.optimizer._learning_rate
    assert type(sched) is type(lr) and sched.get_config() == lr.get_config()
    assert int(back.optimizer.iterations) == 8


@pytest.mark.parametrize("cfg, match", [
    ({"name": "one_cycle", "pct_start": 0.0}, r"schedule.pct_start must be in \(0, 1\) .* got 0.0"),
    ({"name": "one_cycle", "pct_start": 1.0}, r"schedule.pct_start .* got 1.0"),
    ({"name": "one_cycle", "div": 0.5}, r"schedule.div must be >= 1 .* got 0.5"),
    ({"name": "one_cycle", "div_final": 0.1}, r"schedule.div_final must be >= 1 .* got 0.1"),
    ({"name": "triangular", "div": -2.0}, r"schedule.div must be >= 1 .* got -2.0"),
    ({"name": "triangular", "cycles": 0}, r"schedule.cycles .* got 0"),
    ({"name": "one_cycle", "warmup_epochs": 1}, r"one_cycle.*set schedule.warmup_epochs=0"),
])
def test_cyclical_bad_fields_raise_with_the_field(cfg, match):
    with pytest.raises(ValueError, match=match):
        schedules.get(cfg, learning_rate=LR, steps_per_epoch=SPE, epochs=EPOCHS)


@pytest.mark.parametrize("low, momentum, match", [
    (0.9, 0.9, r"schedule.momentum_low must be in \[0, 0.9\).* got 0.9"),
    (-0.1, 0.9, r"schedule.momentum_low .* got -0.1"),
    (0.5, 0.0, r"needs a high momentum in \(0, 1\).* got 0.0"),
])
def test_momentum_cycle_bad_values_raise(low, momentum, match):
    with pytest.raises(ValueError, match=match):
        schedules.momentum_values({"name": "one_cycle", "momentum_low": low},
                                  momentum=momentum, steps_per_epoch=SPE, epochs=EPOCHS)
