"""models.layers: Maxout, MaxoutActivation, WeightNormalization."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from models.layers import Maxout, MaxoutActivation, WeightNormalization


def _rand(*shape, dtype="float32"):
    return np.random.default_rng(0).standard_normal(shape).astype(dtype)


# --- Maxout -------------------------------------------------------------------------------


@pytest.mark.parametrize("pieces", [1, 2, 3])
def test_maxout_holds_pieces_times_the_dense_params(pieces):
    dense = keras.layers.Dense(7)
    dense.build((None, 5))
    maxout = Maxout(7, pieces)
    maxout.build((None, 5))
    assert maxout.count_params() == pieces * dense.count_params()


def test_maxout_computes_the_max_over_its_pieces():
    layer = Maxout(3, pieces=4)
    x = _rand(6, 5)
    y = keras.ops.convert_to_numpy(layer(x))
    z = x @ layer.kernel.numpy() + layer.bias.numpy()  # (6, 12): unit j owns z[:, 4j:4j+4]
    np.testing.assert_allclose(y, z.reshape(6, 3, 4).max(-1), rtol=1e-6)


def test_maxout_activation_equals_widened_dense_then_max():
    x = _rand(4, 5)
    maxout = Maxout(3, pieces=2)
    y = keras.ops.convert_to_numpy(maxout(x))
    dense = keras.layers.Dense(6)
    dense.build((None, 5))
    dense.set_weights(maxout.get_weights())
    np.testing.assert_allclose(y, MaxoutActivation(2)(dense(x)), rtol=1e-6)


def test_maxout_activation_on_channels_and_bad_width():
    x = _rand(2, 3, 3, 8)
    y = keras.ops.convert_to_numpy(MaxoutActivation(4)(x))
    np.testing.assert_allclose(y, x.reshape(2, 3, 3, 2, 4).max(-1))
    with pytest.raises(ValueError, match="divisible"):
        MaxoutActivation(3)(x)


# --- WeightNormalization ------------------------------------------------------------------


@pytest.mark.parametrize(
    "inner, x",
    [
        (lambda: keras.layers.Dense(4), _rand(5, 3)),
        (lambda: keras.layers.Conv2D(4, 3, padding="same"), _rand(2, 5, 5, 3)),
        (lambda: keras.layers.Conv2D(4, 3, strides=2, padding="valid"), _rand(2, 7, 7, 3)),
    ],
)
def test_weight_norm_effective_kernel_is_g_v_over_norm_v(inner, x):
    layer = WeightNormalization(inner())
    layer(x)  # build
    g = _rand(4) + 2.0
    layer.g.assign(g)
    v = layer.layer.kernel.numpy()
    axes = tuple(range(v.ndim - 1))
    expected = g * v / np.sqrt((v**2).sum(axis=axes))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.effective_kernel()), expected,
                               rtol=1e-5)
    # ... and the output is the wrapped layer's with that kernel.
    plain = inner()
    plain.build(x.shape)
    plain.set_weights([expected, layer.layer.bias.numpy()])
    np.testing.assert_allclose(layer(x), plain(x), rtol=1e-4, atol=1e-5)


def test_weight_norm_starts_at_the_wrapped_layers_init():
    x = _rand(5, 3)
    dense = keras.layers.Dense(4)
    layer = WeightNormalization(dense)
    layer(x)
    np.testing.assert_allclose(layer.effective_kernel(), dense.kernel.numpy(), rtol=1e-6)


def test_weight_norm_data_init_whitens_the_first_batch_only():
    x = _rand(64, 5) * 3.0 + 2.0
    layer = WeightNormalization(keras.layers.Dense(4), data_init=True)
    y = keras.ops.convert_to_numpy(layer(x, training=True))
    np.testing.assert_allclose(y.mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(y.std(0), 1.0, atol=1e-3)
    g = layer.g.numpy().copy()
    layer(x + 1.0, training=True)
    np.testing.assert_array_equal(layer.g.numpy(), g)


def test_weight_norm_rejects_non_linear_layers():
    with pytest.raises(ValueError, match="Dense or Conv"):
        WeightNormalization(keras.layers.ReLU())


# --- gradient checks (float64, central differences) ---------------------------------------


def _numeric_grad(f, var, eps=1e-6):
    """Central differences of the scalar f() w.r.t. every entry of the tf.Variable var."""
    value = var.numpy()
    grad = np.zeros_like(value)
    for idx in np.ndindex(value.shape):
        for sign in (1, -1):
            bumped = value.copy()
            bumped[idx] += sign * eps
            var.assign(bumped)
            grad[idx] += sign * float(f()) / (2 * eps)
    var.assign(value)
    return grad


def _rel_error(a, n):
    return np.max(np.abs(a - n) / np.maximum(np.abs(a) + np.abs(n), 1e-12))


@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda: Maxout(3, pieces=3, dtype="float64"), (4, 5)),
        (lambda: WeightNormalization(keras.layers.Dense(3, dtype="float64"), dtype="float64"),
         (4, 5)),
        (lambda: WeightNormalization(keras.layers.Conv2D(2, 3, dtype="float64"),
                                     dtype="float64"), (2, 4, 4, 2)),
    ],
)
def test_gradient_check_float64(make, shape):
    layer = make()
    x = tf.Variable(_rand(*shape, dtype="float64"))
    layer(x)
    # A bias/g away from its init so no gradient is trivially symmetric.
    for w in layer.trainable_weights:
        w.assign(w.numpy() + 0.1 * _rand(*w.shape, dtype="float64"))
    out_shape = keras.ops.shape(layer(x))
    r = tf.constant(_rand(*out_shape, dtype="float64"))

    def loss():
        return tf.reduce_sum(layer(x) * r)

    variables = [x, *layer.trainable_weights]
    with tf.GradientTape() as tape:
        value = loss()
    analytic = tape.gradient(value, variables)
    for var, a in zip(variables, analytic):
        n = _numeric_grad(loss, var)
        assert _rel_error(np.asarray(a), n) < 1e-6, var.name


# --- serialization ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda: Maxout(4, pieces=3, kernel_regularizer=keras.regularizers.L2(1e-3)), (6,)),
        (lambda: MaxoutActivation(2), (6,)),
        (lambda: WeightNormalization(keras.layers.Dense(4, activation="tanh")), (6,)),
        (lambda: WeightNormalization(keras.layers.Conv2D(4, 3, padding="same"), data_init=True),
         (5, 5, 2)),
    ],
)
def test_save_load_safe_mode_predicts_identically(tmp_path, make, shape):
    inputs = keras.Input(shape)
    x = make()(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(x)))
    model.compile("sgd", "mse")
    data = _rand(8, *shape)
    model.train_on_batch(data, _rand(8, 3))  # moves the weights (and runs data_init)
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)  # safe mode, no custom_objects
    np.testing.assert_array_equal(model.predict(data, verbose=0), loaded.predict(data, verbose=0))
