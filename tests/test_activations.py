"""models.activations: the activation-layer factory."""

import keras
import numpy as np
import pytest

from models import activations
from models.layers import MaxoutActivation

X = np.linspace(-3, 3, 12, dtype="float32").reshape(2, 6)


@pytest.mark.parametrize("name", activations.NAMES)
def test_every_name_gives_a_fresh_named_layer_that_maps_back(name):
    a, b = activations.get(name, name="act_x"), activations.get(name)
    assert isinstance(a, keras.layers.Layer) and a is not b
    assert a.name == "act_x"
    assert activations.name_of(a) == name
    y = keras.ops.convert_to_numpy(a(X))
    assert np.all(np.isfinite(y))
    assert y.shape == ((2, 3) if name == "maxout" else (2, 6))


@pytest.mark.parametrize("name, expected", [
    ("relu", np.maximum(X, 0)),
    ("tanh", np.tanh(X)),
    ("sigmoid", 1 / (1 + np.exp(-X))),
    ("leaky_relu", np.where(X > 0, X, 0.01 * X)),  # the lecture's max(0.01x, x)
    ("prelu", np.where(X > 0, X, 0.25 * X)),
    ("elu", np.where(X > 0, X, np.exp(X) - 1)),
])
def test_values(name, expected):
    np.testing.assert_allclose(activations.get(name)(X), expected, rtol=1e-5, atol=1e-6)


def test_keyword_arguments_aliases_dicts_and_objects():
    assert activations.get("leaky_relu", alpha=0.2).negative_slope == pytest.approx(0.2)
    assert activations.get("maxout", pieces=3).pieces == 3
    assert activations.width_factor(activations.get("maxout", pieces=3)) == 3
    assert activations.width_factor(activations.get("relu")) == 1
    assert activations.name_of(activations.get("swish")) == "silu"
    assert activations.get({"name": "elu", "alpha": 0.5}).alpha == pytest.approx(0.5)
    layer = MaxoutActivation(4)
    assert activations.get(layer) is layer
    assert activations.get(keras.layers.serialize(layer)).pieces == 4
    assert activations.name_of(activations.get(None)) is None  # linear: not an activation
    assert activations.name_of(activations.get(keras.activations.tanh)) == "tanh"


def test_unknown_name_and_argument_raise():
    with pytest.raises(ValueError, match="sigmoid, tanh, relu"):
        activations.get("rectifier")
    with pytest.raises(ValueError, match="pieces"):
        activations.get("tanh", pieces=2)
