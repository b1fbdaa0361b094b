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
    raise AssertionError(name)


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
                               "cosine_restarts", "plateau")


@pytest.mark.parametrize("warmup_epochs", [0, 2])
@pytest.mark.parametrize("name", schedules.NAMES)
def test_values_equal_closed_form(name, warmup_epochs):
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
