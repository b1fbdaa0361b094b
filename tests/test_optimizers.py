import keras
import numpy as np
import pytest

from recipes import optimizers, schedules
from recipes.configs import base

EXPECTED = {
    "sgd": (keras.optimizers.SGD, {"momentum": 0.0, "nesterov": False}),
    "momentum": (keras.optimizers.SGD, {"momentum": 0.9, "nesterov": False}),
    "nesterov": (keras.optimizers.SGD, {"momentum": 0.9, "nesterov": True}),
    "adagrad": (keras.optimizers.Adagrad, {"initial_accumulator_value": 0.0}),
    "rmsprop": (keras.optimizers.RMSprop, {"rho": 0.9, "momentum": 0.0}),
    "adam": (keras.optimizers.Adam, {}),
    "adamw": (keras.optimizers.AdamW, {"weight_decay": 0.0}),
}


def test_names_are_the_config_vocabulary():
    assert optimizers.NAMES == tuple(EXPECTED)


@pytest.mark.parametrize("name", optimizers.NAMES)
def test_builds_and_takes_one_step(name):
    opt = optimizers.get({"name": name, "learning_rate": 0.1})
    cls, fields = EXPECTED[name]
    assert type(opt) is cls
    config = opt.get_config()
    assert config["learning_rate"] == pytest.approx(0.1)
    for k, v in fields.items():
        assert config[k] == v, k
    w = keras.Variable(np.ones((3,), "float32"))
    opt.apply([keras.ops.convert_to_tensor([1.0, -2.0, 0.5])], [w])
    delta = w.numpy() - 1.0
    assert int(opt.iterations) == 1
    assert np.all(np.sign(delta) == [-1, 1, -1])  # every rule steps against the gradient


def test_adam_defaults_are_the_papers():
    opt = optimizers.get(None)  # base.py's default optimizer is adam
    assert type(opt) is keras.optimizers.Adam
    c = opt.get_config()
    assert (c["beta_1"], c["beta_2"], c["epsilon"]) == (0.9, 0.999, 1e-8)
    assert c["learning_rate"] == pytest.approx(1e-3)


def test_plain_sgd_step_is_lr_times_gradient():
    opt = optimizers.get({"name": "sgd", "learning_rate": 0.1, "momentum": 0.9})
    w = keras.Variable(np.ones((2,), "float32"))
    for _ in range(2):
        opt.apply([keras.ops.convert_to_tensor([1.0, 2.0])], [w])
    np.testing.assert_allclose(w.numpy(), [0.8, 0.6], rtol=1e-6)  # no velocity builds up


def test_adamw_decays_weights_with_zero_gradient_adam_does_not():
    zero = [keras.ops.zeros((2,))]
    wa, ww = (keras.Variable(np.ones((2,), "float32")) for _ in range(2))
    optimizers.get({"name": "adam", "learning_rate": 0.1}).apply(zero, [wa])
    optimizers.get({"name": "adamw", "learning_rate": 0.1, "weight_decay": 0.5}).apply(
        zero, [ww])
    np.testing.assert_allclose(wa.numpy(), [1.0, 1.0])
    np.testing.assert_allclose(ww.numpy(), [0.95, 0.95], rtol=1e-6)  # w -= lr * wd * w


def test_learning_rate_override_float_and_schedule():
    assert optimizers.get("adam", learning_rate=0.5).get_config()["learning_rate"] == 0.5
    sched = schedules.get("cosine", learning_rate=0.2, steps_per_epoch=2, epochs=3)
    opt = optimizers.get("momentum", learning_rate=sched)
    assert opt._learning_rate is sched
    assert float(opt.learning_rate) == pytest.approx(0.2)


def test_clipnorm_applies():
    opt = optimizers.get({"name": "sgd", "learning_rate": 1.0, "clipnorm": 1.0})
    assert opt.clipnorm == 1.0
    w = keras.Variable(np.zeros((2,), "float32"))
    opt.apply([keras.ops.convert_to_tensor([3.0, 4.0])], [w])
    np.testing.assert_allclose(w.numpy(), [-0.6, -0.8], rtol=1e-6)
    assert optimizers.get("sgd").clipnorm is None


def test_config_dict_branch():
    c = base.get_config().optimizer
    c.name, c.momentum = "nesterov", 0.5
    opt = optimizers.get(c)
    assert opt.nesterov and opt.momentum == 0.5


@pytest.mark.parametrize("cfg, match", [
    ({"learning_rate": -1.0}, r"optimizer.learning_rate must be > 0, got -1.0"),
    ({"name": "momentum", "momentum": 1.0}, r"optimizer.momentum must be in \[0, 1\), got 1.0"),
    ({"beta_2": -0.1}, r"optimizer.beta_2 must be in \[0, 1\), got -0.1"),
    ({"epsilon": 0.0}, r"optimizer.epsilon must be > 0, got 0.0"),
    ({"name": "adam", "weight_decay": 1e-4}, r"applies to optimizer.name='adamw' only"),
    ({"clipnorm": -1.0}, r"optimizer.clipnorm must be >= 0"),
    ({"name": "lbfgs"}, r"'lbfgs' is not an optimizer; use one of \['sgd', 'momentum'"),
    ({"lr": 0.1}, r"unknown field\(s\) optimizer.lr; valid fields"),
    ({"ema": 1.0}, r"optimizer.ema must be in \[0, 1\) .* got 1.0"),
    ({"ema": -0.5}, r"optimizer.ema must be in \[0, 1\) .* got -0.5"),
    ({"ema": float("nan")}, r"optimizer.ema must be in \[0, 1\)"),
])
def test_bad_config_raises_with_field_and_value(cfg, match):
    with pytest.raises(ValueError, match=match):
        optimizers.get(cfg)


@pytest.mark.parametrize("name", optimizers.NAMES)
def test_ema_maps_onto_keras_use_ema(name):
    c = optimizers.get({"name": name, "ema": 0.99}).get_config()
    assert (c["use_ema"], c["ema_momentum"], c["ema_overwrite_frequency"]) == (True, 0.99, None)
    assert optimizers.get({"name": name}).get_config()["use_ema"] is False  # 0 = off


def test_ema_fit_writes_the_average_into_the_model():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 4)).astype("float32"), rng.normal(size=(32, 1)).astype("float32")
    finals = []
    for ema in (0.9, 0.0):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        model.compile(optimizers.get({"name": "momentum", "learning_rate": 0.05, "ema": ema}),
                      "mse")
        model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
        finals.append(model.get_weights())
        if ema:
            for w, a in zip(model.trainable_weights,
                            model.optimizer._model_variables_moving_average):
                np.testing.assert_array_equal(w.numpy(), a.numpy())
    assert not np.allclose(finals[0][0], finals[1][0])
