"""models.transform: every named repair, on a Sequential and a Functional model."""

import json

import keras
import numpy as np
import pytest

from models import transform

KERNELS = (keras.layers.Dense, keras.layers.Conv2D)
KWARGS = {"fix_output": {"kind": "multiclass", "num_classes": 4}}


def mlp():
    """Sequential: dying-ReLU bias, huge dropout, tanh, a linear hidden layer, a bad head."""
    return keras.Sequential([
        keras.Input((8,)),
        keras.layers.Dense(6, activation="relu", bias_initializer=keras.initializers.Constant(-1.0),
                           name="d1"),
        keras.layers.Dropout(0.8),
        keras.layers.Dense(6, name="d2"),
        keras.layers.ReLU(),
        keras.layers.Dense(6, activation="tanh", name="d3"),
        keras.layers.Dense(6, name="d4"),  # linear, feeds "out": add_activations' target
        keras.layers.Dense(3, name="out"),
        keras.layers.Activation("relu"),
    ], name="mlp")


def convnet():
    """Functional chain: Conv -> Activation(relu) -> SpatialDropout -> Conv(sigmoid) -> ..."""
    x = inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(3, 3, padding="same", name="c1")(x)
    x = keras.layers.Activation("relu")(x)
    x = keras.layers.SpatialDropout2D(0.7)(x)
    x = keras.layers.Conv2D(3, 3, activation="sigmoid", name="c2")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(4, 1, name="c3")(x)  # linear, then Flatten, then Dense
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(3, activation="relu", name="out")(x)
    return keras.Model(inputs, outputs, name="convnet")


MODELS = {"sequential": mlp, "functional": convnet}


def kernels(model):
    return [layer for layer in model.layers if isinstance(layer, KERNELS)]


def act(fn):
    return getattr(fn, "__name__", str(fn))


def hidden_activations(model):
    """Names of the nonlinearities before the output layer (arguments and layers)."""
    out = model.layers.index(kernels(model)[-1])
    names = []
    for layer in model.layers[:out]:
        if isinstance(layer, keras.layers.ReLU):
            names.append("leaky_relu" if layer.negative_slope else "relu")
        elif isinstance(layer, keras.layers.LeakyReLU):
            names.append("leaky_relu")
        elif isinstance(layer, (keras.layers.Activation, *KERNELS)):
            names.append(act(layer.activation))
    return names


def final_activation(model):
    for layer in reversed(model.layers):
        if isinstance(layer, keras.layers.Softmax):
            return "softmax"
        if isinstance(layer, (keras.layers.Activation, *KERNELS)):
            name = act(layer.activation)
            if name != "linear" or isinstance(layer, KERNELS):
                return name
    return None


def data(model, n=8, kind=None):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, *model.input_shape[1:])).astype("float32")
    out = model.output_shape[1:]
    if kind == "multiclass":
        return x, rng.integers(0, out[-1], size=n), "sparse_categorical_crossentropy"
    if kind in ("binary", "multilabel"):
        return x, rng.integers(0, 2, size=(n, *out)).astype("float32"), "binary_crossentropy"
    return x, rng.normal(size=(n, *out)).astype("float32"), "mse"


def snapshot(model):
    return json.dumps(model.get_config(), sort_keys=True, default=str), model.get_weights()


@pytest.mark.parametrize("model_kind", sorted(MODELS))
@pytest.mark.parametrize("name", sorted(transform.TRANSFORMS))
def test_original_untouched_and_new_model(name, model_kind):
    model = MODELS[model_kind]()
    config, weights = snapshot(model)
    new = transform.apply(name, model, **KWARGS.get(name, {}))
    assert new is not model and not new.compiled
    after_config, after_weights = snapshot(model)
    assert after_config == config
    assert all(np.array_equal(a, b) for a, b in zip(weights, after_weights))
    if name == "fix_output":
        assert new.output_shape == (*model.output_shape[:-1], 4)
    else:
        assert new.output_shape == model.output_shape
    assert not {id(w) for w in new.weights} & {id(w) for w in model.weights}


@pytest.mark.parametrize("model_kind", sorted(MODELS))
@pytest.mark.parametrize("name", sorted(transform.TRANSFORMS))
def test_trains_summarizes_and_reloads_safely(name, model_kind, tmp_path):
    model = MODELS[model_kind]()
    new = transform.apply(name, model, **KWARGS.get(name, {}))
    new.summary(print_fn=lambda *a, **k: None)
    x, y, loss = data(new, kind="multiclass" if name == "fix_output" else None)
    new.compile(optimizer="sgd", loss=loss)
    history = new.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    path = tmp_path / "m.keras"
    new.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), new.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("model_kind", sorted(MODELS))
@pytest.mark.parametrize("kind,units,activation", [
    ("multiclass", 5, "softmax"), ("binary", 1, "sigmoid"), ("multilabel", 4, "sigmoid")])
def test_fix_output(model_kind, kind, units, activation):
    new = transform.fix_output(MODELS[model_kind](), kind, num_classes=units)
    assert new.output_shape[-1] == units
    assert final_activation(new) == activation
    assert not any(isinstance(layer, (keras.layers.Activation, keras.layers.Softmax))
                   for layer in new.layers[new.layers.index(kernels(new)[-1]):])


@pytest.mark.parametrize("tail", ["activation", "softmax_layer"])
def test_fix_output_replaces_a_softmax_on_one_unit(tail):
    head = keras.layers.Activation("softmax") if tail == "activation" else keras.layers.Softmax()
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1), head])
    new = transform.fix_output(model, "binary")
    assert len(new.layers) == 1 and act(new.layers[0].activation) == "sigmoid"


def test_fix_output_after_global_pooling():
    inputs = keras.Input((5, 5, 2))
    x = keras.layers.Conv2D(7, 1, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Softmax()(x))
    new = transform.fix_output(model, "multiclass", 3)
    assert new.output_shape == (None, 3)
    assert final_activation(new) == "softmax"
    assert isinstance(new.layers[-1], keras.layers.Activation)


@pytest.mark.parametrize("model_kind", sorted(MODELS))
def test_leaky_relu(model_kind):
    model = MODELS[model_kind]()
    assert "relu" in hidden_activations(model)
    new = transform.leaky_relu(model, negative_slope=0.2)
    assert "relu" not in hidden_activations(new)
    leaky = [layer for layer in new.layers if isinstance(layer, keras.layers.LeakyReLU)]
    assert leaky and all(layer.negative_slope == pytest.approx(0.2) for layer in leaky)
    for layer in kernels(new)[:-1]:
        assert np.all(keras.ops.convert_to_numpy(layer.bias) == 0)


@pytest.mark.parametrize("model_kind", sorted(MODELS))
def test_reinitialize(model_kind):
    new = transform.reinitialize(MODELS[model_kind]())
    expected = {"d1": "HeNormal", "d2": "HeNormal", "d3": "GlorotUniform", "d4": "GlorotUniform",
                "c1": "HeNormal", "c2": "GlorotUniform", "c3": "GlorotUniform",
                "out": "HeNormal"}
    for layer in kernels(new):
        assert type(layer.kernel_initializer).__name__ == expected[layer.name], layer.name
        assert type(layer.bias_initializer).__name__ == "Zeros"


@pytest.mark.parametrize("model_kind", sorted(MODELS))
def test_batchnorm(model_kind):
    model = MODELS[model_kind]()
    new = transform.batchnorm(model)
    norms = [layer for layer in new.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) == len(kernels(model)) - 1
    for layer in kernels(new)[:-1]:
        assert act(layer.activation) == "linear"
        after = new.layers[new.layers.index(layer) + 1]
        assert isinstance(after, keras.layers.BatchNormalization)
    # the activations survive, now after the norm
    def nonlinear(m):
        return sorted(a for a in hidden_activations(m) if a != "linear")

    assert nonlinear(new) == nonlinear(model)


def test_batchnorm_on_a_residual_branch():
    inputs = keras.Input((4,))
    a = keras.layers.Dense(4, activation="relu", name="a")(inputs)
    b = keras.layers.Dense(4, name="b")(a)
    x = keras.layers.ReLU()(keras.layers.Add()([inputs, b]))
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(x))
    new = transform.batchnorm(model)
    assert sum(isinstance(layer, keras.layers.BatchNormalization) for layer in new.layers) == 2
    x = np.ones((2, 4), "float32")
    assert new.predict(x, verbose=0).shape == (2, 2)


@pytest.mark.parametrize("model_kind", sorted(MODELS))
def test_relu(model_kind):
    model = MODELS[model_kind]()
    new = transform.relu(model)
    assert not {"tanh", "sigmoid"} & set(hidden_activations(new))
    assert len(hidden_activations(new)) == len(hidden_activations(model))
    changed = {"d3", "c2"}
    for layer in kernels(new):
        if layer.name in changed:
            assert type(layer.kernel_initializer).__name__ == "HeNormal"
            assert type(layer.bias_initializer).__name__ == "Zeros"


@pytest.mark.parametrize("model_kind", sorted(MODELS))
def test_add_activations(model_kind):
    model = MODELS[model_kind]()
    new = transform.add_activations(model, activation="elu")
    target = "d4" if model_kind == "sequential" else "c3"
    assert act(new.get_layer(target).activation) == "elu"
    untouched = "d2" if model_kind == "sequential" else "c1"  # followed by an activation layer
    assert act(new.get_layer(untouched).activation) == "linear"
    assert act(new.get_layer("out").activation) == act(model.get_layer("out").activation)


def test_add_activations_after_a_norm():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, name="a"),
                              keras.layers.BatchNormalization(), keras.layers.Dense(2)])
    new = transform.add_activations(model)
    assert isinstance(new.layers[1], keras.layers.BatchNormalization)
    assert act(new.layers[2].activation) == "relu"


@pytest.mark.parametrize("model_kind", sorted(MODELS))
def test_cap_dropout(model_kind):
    new = transform.cap_dropout(MODELS[model_kind](), max_rate=0.5)
    rates = [layer.rate for layer in new.layers if isinstance(layer, keras.layers.Dropout)
             or "Dropout" in type(layer).__name__]
    assert rates and max(rates) <= 0.5


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__(name="mine")
        self.dense = keras.layers.Dense(2)

    def call(self, x):
        return self.dense(x)


@pytest.mark.parametrize("name", sorted(transform.TRANSFORMS))
def test_subclassed_model_raises(name):
    model = Subclassed()
    model(np.ones((1, 3), "float32"))
    with pytest.raises(ValueError, match="model mine: a subclassed.*pass a function"):
        transform.apply(name, model, **KWARGS.get(name, {}))


def test_unknown_name_and_describe():
    with pytest.raises(ValueError, match="valid names: fix_output"):
        transform.apply("nope", mlp())
    for name in transform.TRANSFORMS:
        line = transform.describe(name)
        assert line and "\n" not in line


def test_changed_layers():
    model = mlp()
    changed = transform.batchnorm(model)
    diff = transform.changed_layers(model, changed)
    assert "+d1_bn" in diff and "d1" in diff and "out" not in diff
