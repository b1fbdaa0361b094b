import json
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import models
from recipes import configs, data, sanity


@pytest.fixture(scope="module")
def splits():
    return data.load("digits")


def digits(**changes):
    cfg = configs.get("digits_mlp")
    cfg.train.verbose = 0
    cfg.monitor.tensorboard = False
    return sanity.configure(cfg, changes)


def test_initial_loss_small_init_is_ln10(splits):
    r = sanity.initial_loss(digits(**{"model.init": "small"}), splits=splits)
    assert r.passed and r.name == "initial_loss"
    assert r.measured == pytest.approx(2.30, abs=0.05)
    assert r.expected == pytest.approx(math.log(10), abs=1e-6)
    assert "ln(10)" in r.verdict and "PASS" in r.verdict
    json.dumps(r.to_dict())


def test_initial_loss_fails_for_large_init_and_says_why(splits):
    cfg = digits(**{"model.init": "small", "model.init_scale": 10.0})
    r = sanity.initial_loss(cfg, splits=splits)
    assert not r.passed and r.measured > 10 * math.log(10)
    assert "FAIL" in r.verdict and "init_scale=10" in r.advice


def test_initial_loss_svm_expects_c_minus_1(splits):
    r = sanity.initial_loss(digits(**{"loss.name": "svm", "model.init": "small"}),
                            splits=splits)
    assert r.passed and r.expected == pytest.approx(9.0)
    assert r.measured == pytest.approx(9.0, abs=0.1)


def test_regularization_raises_loss(splits):
    r = sanity.regularization_raises_loss(digits(), splits=splits)
    assert r.passed and r.measured > r.expected * 1.5, r.verdict


def test_overfit_small_passes_for_digits_mlp(splits):
    r = sanity.overfit_small(digits(), splits=splits)
    assert r.passed, r.verdict
    assert r.measured == 1.0 and r.data["loss"] < sanity.OVERFIT_LOSS
    assert r.data["examples"] == 20 and r.data["epochs"] < 200
    assert r.data["learning_rate"] == pytest.approx(1e-3)


def _frozen_zero_logits(cfg, input_shape, num_classes):
    model = models.build(cfg.model, input_shape, num_classes)
    logits = model.get_layer("logits")
    logits.kernel.assign(np.zeros(logits.kernel.shape))
    logits.bias.assign(np.zeros(logits.bias.shape))
    logits.trainable = False
    return model


def test_overfit_small_fails_when_last_layer_is_frozen_at_zero(splits):
    r = sanity.overfit_small(digits(), splits=splits, epochs=40, model_fn=_frozen_zero_logits)
    assert not r.passed and r.measured <= 0.2
    assert r.data["loss"] == pytest.approx(math.log(10), abs=1e-3)
    assert "broken" in r.advice and "0.001" in r.advice


def test_stratified_subset_takes_every_class():
    y = np.repeat(np.arange(10), [50] + [5] * 9)
    idx = sanity.stratified_subset(y, 20, seed=0)
    assert len(idx) == 20 and len(set(idx)) == 20
    assert np.bincount(y[idx], minlength=10).tolist() == [2] * 10


@pytest.mark.parametrize("changes, layer", [
    ({"model.activation": "maxout"}, "MaxoutActivation"),
    ({"model.norm": "weight", "model.l2": 1e-3}, "WeightNormalization"),
])
def test_gradient_check_passes_for_custom_layers(splits, changes, layer):
    r = sanity.gradient_check(digits(**changes), splits=splits)
    assert r.passed, r.verdict
    assert r.measured < 1e-6 and layer in r.data["custom_layers"]
    assert keras.config.floatx() == "float32"
    assert keras.config.dtype_policy().name == "float32"


def test_gradient_check_converts_a_float32_model():
    cfg = digits(**{"model.hidden": (8,)})
    model = models.build(sanity.configure(cfg, {"model.activation": "maxout"}).model,
                         (8, 8, 1), 10)
    r = sanity.gradient_check(model)
    assert r.passed and r.data["custom_layers"] == ["MaxoutActivation"]
    assert model.weights[0].dtype == "float32"  # the original is untouched


class _DoubledGradientDense(keras.layers.Dense):
    """Dense whose backward pass doubles every gradient: a deliberately wrong gradient."""

    def call(self, inputs):
        @tf.custom_gradient
        def identity(z):
            return tf.identity(z), lambda dy: 2.0 * dy

        return self.activation(identity(keras.ops.matmul(inputs, self.kernel) + self.bias))


def test_gradient_check_fails_for_a_wrong_gradient():
    def build():
        inputs = keras.Input((8, 8, 1))
        x = keras.layers.Flatten()(inputs)
        x = _DoubledGradientDense(16, activation="tanh", name="doubled")(x)
        return keras.Model(inputs, keras.layers.Dense(10)(x))

    r = sanity.gradient_check(build)
    assert not r.passed and r.measured > 0.1
    assert r.data["failing_weights"] == ["doubled/bias", "doubled/kernel"]
    assert keras.config.floatx() == "float32"


def test_input_independent_baseline_passes_on_digits(splits):
    r = sanity.input_independent_baseline(digits(), splits=splits, epochs=3)
    assert r.passed, r.verdict
    assert r.data["accuracy_real"] > 0.6 and r.data["accuracy_zeros"] < 0.2


def test_input_independent_baseline_fails_for_a_blind_model(splits):
    def blind(cfg, input_shape, num_classes):
        inputs = keras.Input(input_shape)
        x = keras.layers.Rescaling(0.0)(inputs)  # the input never reaches the net
        return keras.Model(inputs, models.build(cfg.model, input_shape, num_classes)(x))

    r = sanity.input_independent_baseline(digits(), splits=splits, epochs=1, model_fn=blind)
    assert not r.passed
    assert r.data["accuracy_real"] == pytest.approx(r.data["accuracy_zeros"], abs=0.05)


def test_init_output_bias_gives_the_prior_entropy(splits):
    y = splits.train.y
    keep = np.concatenate([np.flatnonzero(y == 0)] +
                          [np.flatnonzero(y == c)[:10] for c in range(1, 10)])
    train = data.Split(splits.train.x[keep], y[keep])
    imbalanced = data.Splits(train, splits.val, splits.test, splits.info)
    entropy = sanity.class_prior_entropy(train.y, 10)
    assert entropy < math.log(10) - 0.5

    changed = []

    def with_prior_bias(cfg, input_shape, num_classes):
        model = models.build(cfg.model, input_shape, num_classes)
        changed.append(sanity.init_output_bias(model, train.y, num_classes))
        return model

    r = sanity.initial_loss(digits(**{"model.init": "small"}), splits=imbalanced,
                            model_fn=with_prior_bias)
    assert changed == [True] and r.passed
    assert r.measured == pytest.approx(entropy, abs=0.03)
    assert r.expected == pytest.approx(entropy, abs=1e-4)

    balanced = models.build(digits().model, (8, 8, 1), 10)
    assert not sanity.init_output_bias(balanced, splits.train.y, 10)
    assert sanity.class_prior_entropy(np.arange(10), 10) == pytest.approx(math.log(10))


def _result(name):
    return sanity.CheckResult(name, True, 0.0, 0.0, name, "", {})


@pytest.mark.parametrize("changes, expected", [
    ({}, ["initial_loss", "regularization_raises_loss", "overfit_small",
          "input_independent_baseline"]),
    ({"model.activation": "maxout"}, ["initial_loss", "regularization_raises_loss",
                                      "overfit_small", "input_independent_baseline",
                                      "gradient_check"]),
])
def test_run_all_runs_the_lecture_order(splits, monkeypatch, changes, expected):
    for name in ("initial_loss", "regularization_raises_loss", "overfit_small",
                 "input_independent_baseline", "gradient_check"):
        monkeypatch.setattr(sanity, name, lambda *a, _n=name, **k: _result(_n))
    results = sanity.run_all(digits(**changes), splits=splits)
    assert [r.name for r in results] == expected
