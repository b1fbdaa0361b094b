"""The checks before training (recipes.preflight): each bug found, no false alarm, run never raises.

Tiny Keras models on sklearn digits (64 features, 10 classes), standardized as the run does.
"""

import keras
import numpy as np
import pytest
from sklearn.datasets import load_digits

from recipes import causes, preflight

L = keras.layers


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    x = x.astype("float32")
    std = ((x - x.mean(0)) / np.maximum(x.std(0), 1e-7)).astype("float32")
    return x[:600], std[:600], y[:600].astype("int64")


def tags_of(y):
    """Four 0/1 tags per digit (even, > 4, has a loop, has a straight stroke)."""
    return np.stack([y % 2 == 0, y > 4, np.isin(y, [0, 6, 8, 9]), np.isin(y, [1, 4, 7])],
                    1).astype("float32")


def mlp(units, activation, hidden=None, loss=None, optimizer=None):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64,)),
                              *(hidden or [L.Dense(32, activation="relu")]),
                              L.Dense(units, activation=activation)])
    if loss is not None:
        model.compile(optimizer or keras.optimizers.Adam(1e-3), loss)
    return model


def serious(findings):
    return [f for f in findings if causes.serious(f)]


def codes(findings):
    """Each rule that fired -> its finding (causes.resolve merges rules of one cause)."""
    out = {}
    for f in findings:
        out.setdefault(f.code, f)
        for line in f.data.get("also", []):
            out.setdefault(line.split(":")[0], f)
    return out


SCCE = "sparse_categorical_crossentropy"
LOGITS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

# name: (units, activation, loss, labels, expected code, severity); labels: ids | onehot |
# binary | tags. Severities follow what Keras 3 does with each (see the module docstring).
OUTPUT_BUGS = {
    "softmax on one unit": (1, "softmax", "binary_crossentropy", "binary", "softmax_one_unit",
                            "error"),
    "units != classes": (5, "softmax", SCCE, "ids", "output_units", "error"),
    "more units than classes": (12, "softmax", SCCE, "ids", "output_units", "error"),
    "sparse loss on one sigmoid": (1, "sigmoid", SCCE, "binary", "sparse_loss_one_unit",
                                   "error"),
    "categorical loss on one unit": (1, "sigmoid", "categorical_crossentropy", "binary",
                                     "categorical_loss_one_unit", "error"),
    "one-hot with a sparse loss": (10, "softmax", SCCE, "onehot", "onehot_with_sparse_loss",
                                   "error"),
    "ids with a categorical loss": (10, "softmax", "categorical_crossentropy", "ids",
                                    "ids_with_dense_loss", "error"),
    "logits as probabilities": (10, None, SCCE, "ids", "logits_as_probabilities", "error"),
    "binary logits as probabilities": (1, None, "binary_crossentropy", "binary",
                                       "logits_as_probabilities", "error"),
    "relu with a probability loss": (10, "relu", SCCE, "ids", "non_probability_output",
                                     "error"),
    "tanh with a probability loss": (10, "tanh", SCCE, "ids", "non_probability_output",
                                     "error"),
    "probabilities as logits": (10, "softmax", LOGITS, "ids", "probabilities_as_logits",
                                "warning"),
    "sigmoid as logits": (1, "sigmoid", keras.losses.BinaryCrossentropy(from_logits=True),
                          "binary", "probabilities_as_logits", "warning"),
    "sigmoid with categorical": (10, "sigmoid", "categorical_crossentropy", "onehot",
                                 "sigmoid_categorical", "warning"),
    "softmax with binary ce": (10, "softmax", "binary_crossentropy", "onehot",
                               "softmax_binary_crossentropy", "warning"),
    "relu logits": (10, "relu", LOGITS, "ids", "bounded_logits", "warning"),
    "relu logits, run's loss": (10, "relu", None, "ids", "bounded_logits", "warning"),
    "mse on a classifier": (10, "softmax", "mse", "onehot", "regression_loss", "warning"),
    "softmax on tags": (4, "softmax", "binary_crossentropy", "tags", "softmax_multilabel",
                        "error"),
    "categorical loss on tags": (4, "sigmoid", "categorical_crossentropy", "tags",
                                 "categorical_loss_multilabel", "error"),
}


def labels(kind, y):
    return {"ids": y, "onehot": np.eye(10, dtype="float32")[y], "binary": y % 2,
            "tags": tags_of(y)}[kind]


@pytest.mark.parametrize("name", sorted(OUTPUT_BUGS))
def test_output_loss_label_mismatches_are_found(digits, name):
    units, act, loss, kind, code, severity = OUTPUT_BUGS[name]
    _, x, y = digits
    model = mlp(units, act, loss=loss)
    found = preflight.inspect(model, x[:256], labels(kind, y)[:256],
                              num_classes=4 if kind == "tags" else 2 if kind == "binary" else 10,
                              multilabel=kind == "tags")
    got = codes(found)
    assert code in got, [f.code for f in found]
    f = got[code]
    assert (f.cause, f.severity) == ("output_loss_mismatch", severity)
    assert f.remedies and f.remedies[0].transform == "fix_output"  # the user's model
    assert any(ch.isdigit() for ch in f.evidence) and f.data["units"] == units
    if severity == "error":
        assert f is found[0]  # resolved: the most serious first


@pytest.mark.parametrize("units, act, loss, kind", [
    (10, "softmax", SCCE, "ids"),
    (10, "softmax", "categorical_crossentropy", "onehot"),
    (1, "sigmoid", "binary_crossentropy", "binary"),
    (2, "softmax", SCCE, "binary"),
    (10, None, LOGITS, "ids"),
    (1, None, keras.losses.BinaryCrossentropy(from_logits=True), "binary"),
    (4, "sigmoid", "binary_crossentropy", "tags"),
    (4, None, keras.losses.BinaryCrossentropy(from_logits=True), "tags"),
    (10, "softmax", None, "ids"),  # not compiled: the run picks the loss
    (10, None, None, "ids"),
])
def test_correct_models_raise_no_alarm(digits, units, act, loss, kind):
    _, x, y = digits
    model = mlp(units, act, loss=loss)
    found = preflight.inspect(model, x, labels(kind, y),
                              num_classes=4 if kind == "tags" else 2 if kind == "binary" else 10,
                              multilabel=kind == "tags", learning_rate=1e-3, optimizer="adam")
    assert not serious(found), [causes.describe(f) for f in serious(found)]


@pytest.mark.parametrize("loss, units, act, code", [
    ("binary_crossentropy", 1, "softmax", "softmax_one_unit"),
    ({"module": "keras.losses", "class_name": "SparseCategoricalCrossentropy",
      "config": {"name": "sparse_categorical_crossentropy", "from_logits": False},
      "registered_name": None}, 10, None, "logits_as_probabilities"),  # get_compile_config()
    (keras.losses.CategoricalCrossentropy(from_logits=True), 10, "softmax",
     "ids_with_dense_loss"),
])
def test_the_loss_argument_of_an_uncompiled_model(digits, loss, units, act, code):
    _, x, y = digits
    model = mlp(units, act)
    found = preflight.inspect(model, x, y % 2 if units == 1 else y,
                              num_classes=2 if units == 1 else 10, loss=loss)
    assert found[0].code == code and found[0].severity == "error"


def test_probabilities_as_logits_under_mixed_precision_is_an_error(digits):
    """A float16 output is cast for the loss: Keras loses the logits and cannot correct it."""
    _, x, y = digits
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64,)), L.Dense(32, activation="relu"),
                              L.Dense(10, activation="softmax", dtype="mixed_float16")])
    model.compile("adam", LOGITS)
    f = codes(preflight.inspect(model, x, y, num_classes=10))["probabilities_as_logits"]
    assert f.severity == "error"


def test_a_linear_stack_is_found(digits):
    _, x, y = digits
    model = mlp(10, "softmax", [L.Dense(64), L.Dense(64)], loss=SCCE)
    f = codes(preflight.inspect(model, x, y, num_classes=10))["linear_stack"]
    assert (f.cause, f.severity) == ("missing_nonlinearity", "warning")
    assert len(f.data["pairs"]) == 2 and f.remedies[0].transform == "add_activations"


def test_linear_stacks_see_through_dropout_but_not_merges():
    i = keras.Input((16,))
    h = L.Dropout(0.1)(L.Dense(8)(i))
    functional = keras.Model(i, L.Dense(3, activation="softmax")(L.Dense(8)(h)))
    assert len(preflight.linear_stacks(functional)) == 2
    i = keras.Input((8, 8, 1))
    h = L.BatchNormalization()(L.Conv2D(4, 3, padding="same", use_bias=False)(i))
    h = L.ReLU()(L.Add()([h, L.Conv2D(4, 1)(i)]))
    residual = keras.Model(i, L.Dense(3)(L.GlobalAveragePooling2D()(h)))
    assert preflight.linear_stacks(residual) == []


@pytest.mark.parametrize("rate, severity", [(0.3, None), (0.5, None), (0.7, "warning"),
                                            (0.9, "error")])
def test_dropout_rate(digits, rate, severity):
    _, x, y = digits
    model = mlp(10, "softmax", [L.Dense(32, activation="relu"), L.Dropout(rate)], loss=SCCE)
    f = codes(preflight.inspect(model, x, y, num_classes=10)).get("dropout_rate")
    assert (f.severity if f else None) == severity
    if f:
        assert f.cause == "strong_regularization" and f.data["rate"] == pytest.approx(rate)


@pytest.mark.parametrize("optimizer, cause", [
    (keras.optimizers.Adam(0.5), "learning_rate_too_high"),
    (keras.optimizers.RMSprop(1e-7), "learning_rate_too_low"),
    (keras.optimizers.SGD(0.3, momentum=0.9), "learning_rate_too_high"),  # effective 3
    (keras.optimizers.SGD(1e-5), "learning_rate_too_low"),
    (keras.optimizers.SGD(0.1, momentum=0.9), None),
    (keras.optimizers.Adagrad(0.1), None),
    (keras.optimizers.Adam(1e-5), None),  # a fine-tuning rate
    (keras.optimizers.Adam(1e-2), None),
])
def test_learning_rate_range(digits, optimizer, cause):
    _, x, y = digits
    model = mlp(10, "softmax", loss=SCCE, optimizer=optimizer)
    f = codes(preflight.inspect(model, x, y, num_classes=10)).get("learning_rate_range")
    assert (f.cause if f else None) == cause
    if cause == "learning_rate_too_high" and isinstance(optimizer, keras.optimizers.Adam):
        assert f.remedies[0].change == {"optimizer.learning_rate": 0.05}  # lr 0.5 → 0.05


def test_learning_rate_from_arguments(digits):
    _, x, y = digits
    found = preflight.inspect(mlp(10, "softmax"), x, y, num_classes=10, learning_rate=0.5,
                              optimizer="adam")
    assert codes(found)["learning_rate_range"].data["learning_rate"] == 0.5


@pytest.mark.parametrize("scale, severity", [(16.0, "warning"), (255.0, "error")])
def test_unscaled_inputs(digits, scale, severity):
    raw, _, y = digits
    found = preflight.inspect(mlp(10, "softmax", loss=SCCE), raw * scale / 16, y,
                              num_classes=10)
    f = codes(found)["unscaled_inputs"]
    assert (f.cause, f.severity) == ("unnormalized_inputs", severity)
    assert f.remedies[0].change == {"dataset.preprocess": "standardize"}


def test_inputs_nan_constant_and_mixed_scales(digits):
    _, x, y = digits
    model = mlp(10, "softmax", loss=SCCE)
    bad = x.copy()
    bad[3, 5] = np.nan
    assert codes(preflight.inspect(model, bad, y, num_classes=10))[
        "nonfinite_inputs"].severity == "error"
    flat = codes(preflight.inspect(model, np.zeros_like(x), y, num_classes=10))
    assert flat["constant_inputs"].severity == "error"
    mixed = x * np.where(np.arange(64) < 32, 1.0, 1000.0).astype("float32")
    assert "feature_scales" in codes(preflight.inspect(model, mixed, y, num_classes=10))


def test_initial_loss_far_above_ln_c(digits):
    _, x, y = digits
    keras.utils.set_random_seed(0)
    big = keras.initializers.RandomNormal(stddev=1.0)
    model = keras.Sequential([keras.Input((64,)),
                              L.Dense(128, activation="relu", kernel_initializer=big),
                              L.Dense(10, activation="softmax", kernel_initializer=big)])
    model.compile("adam", SCCE)
    f = codes(preflight.inspect(model, x, y, num_classes=10))["initial_loss"]
    assert (f.cause, f.severity) == ("bad_initialization", "warning")
    assert f.data["ratio"] > preflight.INITIAL_LOSS_FACTOR


@pytest.mark.parametrize("init, depth, severity", [
    (keras.initializers.RandomNormal(stddev=1e-3), 4, "error"),  # activations vanish
    (keras.initializers.RandomNormal(stddev=3.0), 3, "error"),  # ~24x Glorot per layer
    (keras.initializers.RandomNormal(stddev=0.01), 1, "warning"),  # 0.08x, one layer
    ("glorot_uniform", 4, None), ("he_normal", 4, None), ("lecun_normal", 4, None),
])
def test_initial_weight_scale(digits, init, depth, severity):
    _, x, y = digits
    hidden = [L.Dense(64, activation="tanh", kernel_initializer=init) for _ in range(depth)]
    model = mlp(10, "softmax", hidden=hidden, loss=SCCE)
    found = codes(preflight.inspect(model, x, y, num_classes=10)).get("init_scale")
    assert (found.severity if found else None) == severity
    if found:
        assert found.cause == "bad_initialization"


def test_initial_weight_scale_is_not_judged_behind_batch_norm(digits):
    _, x, y = digits
    tiny = keras.initializers.RandomNormal(stddev=1e-3)
    hidden = [layer for _ in range(3) for layer in (
        L.Dense(64, kernel_initializer=tiny), L.BatchNormalization(), L.Activation("relu"))]
    model = mlp(10, "softmax", hidden=hidden, loss=SCCE)
    assert "init_scale" not in codes(preflight.inspect(model, x, y, num_classes=10))


def test_scaled_labels(digits):
    _, x, y = digits
    found = preflight.inspect(mlp(10, "softmax", loss=SCCE), x, (y / 255).astype("float32"),
                              num_classes=10)
    f = found[0]
    assert (f.code, f.cause, f.severity) == ("scaled_labels", "scaled_labels", "error")
    assert f.remedies[0].transform == "relabel"


@pytest.mark.parametrize("divisor", [255.0, 9.0, 256.0])
def test_relabel_round_trip(digits, divisor):
    y = digits[2]
    scaled = (y / divisor).astype("float32")
    assert preflight.looks_like_scaled_labels(scaled)
    assert preflight.looks_like_scaled_labels(scaled[:, None])
    np.testing.assert_array_equal(preflight.relabel(scaled), y)
    assert preflight.relabel(scaled).dtype == np.int64


@pytest.mark.parametrize("y", [
    np.arange(10).repeat(5),  # integer ids
    np.arange(10.0).repeat(5),  # float ids
    np.random.default_rng(0).random(200),  # continuous targets
    np.eye(10, dtype="float32")[np.arange(10).repeat(3)],  # one-hot
    np.array([0.5, 0.5]),  # one value
])
def test_not_scaled_labels(y):
    assert not preflight.looks_like_scaled_labels(y)


def test_the_users_model_is_untouched(digits):
    raw, x, y = digits
    model = mlp(10, "softmax", [L.Dense(32, activation="relu"), L.BatchNormalization(),
                                L.Dropout(0.9)], loss=SCCE)
    before = [w.copy() for w in model.get_weights()]
    preflight.inspect(model, x, y, num_classes=10)
    preflight.run({"dataset": {"limit": 300}}, model=model, data=(raw, y))
    preflight.run(model=model, data=(x, y), fit={"epochs": 2})
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    unbuilt = keras.Sequential([L.Dense(8, activation="relu"), L.Dense(10, activation="softmax")])
    preflight.inspect(unbuilt, x, y, num_classes=10)
    assert not unbuilt.built


QUICK = {"dataset": {"limit": 300}, "train": {"epochs": 2}}


def test_run_on_correct_models_raises_no_alarm(digits):
    raw, x, y = digits
    assert not serious(preflight.run(QUICK))  # the built-in MLP on digits
    user = mlp(10, "softmax", loss=SCCE)
    assert not serious(preflight.run(QUICK, model=user, data=(raw, y)))
    assert not serious(preflight.run(model=user, data=(x, y), fit={"epochs": 5}))
    tags = mlp(4, "sigmoid", loss="binary_crossentropy")
    assert not serious(preflight.run(QUICK, model=tags, data=(raw, tags_of(y))))


@pytest.mark.parametrize("fit", [None, {"epochs": 3, "batch_size": 32}])
@pytest.mark.parametrize("case, code", [
    ("units", "output_units"),
    ("sparse one unit", "sparse_loss_one_unit"),
    ("scaled labels", "scaled_labels"),
])
def test_run_returns_what_prepare_refuses(digits, fit, case, code):
    raw, x, y = digits
    model, labels_ = {
        "units": (mlp(5, "softmax", loss=SCCE), y),
        "sparse one unit": (mlp(1, "sigmoid", loss=SCCE), y % 2),
        "scaled labels": (mlp(10, "softmax", loss=SCCE), (y / 255).astype("float32")),
    }[case]
    found = preflight.run(QUICK, model=model, data=(raw if fit is None else x, labels_),
                          fit=fit)
    assert found[0].code == code and found[0].severity == "error"
    assert found[0].remedies


def test_run_fit_reads_the_order_of_the_data(digits):
    _, x, y = digits
    order = np.argsort(y, kind="stable")
    found = codes(preflight.run(model=mlp(10, "softmax", loss=SCCE), data=(x[order], y[order]),
                                fit={"shuffle": False, "validation_split": 0.2}))
    assert found["validation_split_sorted"].cause == "not_shuffled"
    assert found["sorted_unshuffled"].cause == "not_shuffled"
    shuffled = preflight.run(model=mlp(10, "softmax", loss=SCCE), data=(x, y),
                             fit={"shuffle": False, "validation_split": 0.2})
    assert not serious(shuffled)


def test_run_fit_takes_the_data_as_given(digits):
    raw, _, y = digits
    found = codes(preflight.run(model=mlp(10, "softmax", loss=SCCE), data=(raw * 16, y),
                                fit={}))
    assert found["unscaled_inputs"].severity == "error"  # no preprocessing in the user's fit
    assert not serious(preflight.run(QUICK, model=mlp(10, "softmax", loss=SCCE),
                                     data=(raw * 16, y)))  # the run standardizes


def test_run_reports_nan_inputs(digits):
    raw, _, y = digits
    bad = raw.copy()
    bad[7, 3] = np.inf
    found = preflight.run(QUICK, model=mlp(10, "softmax", loss=SCCE), data=(bad, y))
    assert found[0].code == "nonfinite_inputs" and found[0].data["nonfinite"] == 1


@pytest.mark.parametrize("model, data", [
    (3, None),
    ("mlp", None),
    (None, 5),
    (None, (np.zeros((20, 4)), np.random.default_rng(0).random(20))),  # regression
])
def test_run_still_refuses_what_is_not_a_model_or_data(model, data):
    with pytest.raises(ValueError):
        preflight.run(QUICK, model=model, data=data)


# --- the Keras 3 behaviours the severities rest on (a few train steps each) ----------------


def fit_briefly(model, x, y, loss):
    model.compile(keras.optimizers.Adam(1e-2), loss)
    history = model.fit(x, y, epochs=5, batch_size=64, verbose=0)
    return history.history["loss"], model.predict(x, verbose=0)


@pytest.mark.filterwarnings("ignore:You are using a softmax over axis")
def test_keras_trains_a_constant_softmax_on_one_unit(digits):
    """Error: the loss falls to ~0 while the prediction is constant (accuracy at chance)."""
    _, x, y = digits
    losses, p = fit_briefly(mlp(1, "softmax"), x, y % 2, "binary_crossentropy")
    sigmoid, q = fit_briefly(mlp(1, "sigmoid"), x, y % 2, "binary_crossentropy")
    np.testing.assert_allclose(losses, sigmoid, rtol=1e-4)  # the same hidden logit trains
    assert losses[-1] < 0.2 * losses[0]
    assert np.all(p == 1.0) and ((q[:, 0] > 0.5) == y % 2).mean() > 0.9


@pytest.mark.filterwarnings("ignore:.*received `from_logits=True`")
def test_keras_corrects_probabilities_given_as_logits(digits):
    """Warning: on TensorFlow the softmax's logits are used, the same loss as from_logits=False."""
    _, x, y = digits
    wrong, _ = fit_briefly(mlp(10, "softmax"), x, y, LOGITS)
    right, _ = fit_briefly(mlp(10, "softmax"), x, y, SCCE)
    np.testing.assert_allclose(wrong, right, rtol=1e-4)


def test_keras_does_not_correct_logits_given_as_probabilities(digits):
    """Error: raw scores are clipped into [1e-7, 1 - 1e-7] as probabilities."""
    _, x, y = digits
    wrong, p = fit_briefly(mlp(10, None), x, y, SCCE)
    right, _ = fit_briefly(mlp(10, None), x, y, LOGITS)
    assert wrong[-1] > 5 * right[-1]


@pytest.mark.parametrize("batch, severity", [(1, "error"), (4, "warning"), (32, None)])
def test_batch_norm_on_tiny_batches(digits, batch, severity):
    _, x, y = digits
    hidden = [L.Dense(32), L.BatchNormalization(), L.Activation("relu")]
    model = mlp(10, "softmax", hidden=hidden, loss=SCCE)
    found = codes(preflight.run(None, model=model, data=(x, y),
                                fit={"epochs": 1, "batch_size": batch})).get("batch_norm_batch")
    assert (found.severity if found else None) == severity
    if found:
        assert found.cause == "batch_too_small"
        assert found.remedies[0].change["train.batch_size"] >= 32
