"""models.initializers: the weight-initialization factory."""

import keras
import numpy as np
import pytest

from models import initializers

FAN_IN, FAN_OUT = 400, 200


def _draw(name, **kw):
    return keras.ops.convert_to_numpy(initializers.get(name, seed=0, **kw)((FAN_IN, FAN_OUT)))


@pytest.mark.parametrize("name, variance", [
    ("small", 0.01**2),
    ("large", 1.0),
    ("xavier", 1 / FAN_IN),  # the lecture's "Xavier": randn / sqrt(fan_in)
    ("lecun", 1 / FAN_IN),
    ("glorot", 2 / (FAN_IN + FAN_OUT)),
    ("he", 2 / FAN_IN),
    ("orthogonal", 1 / FAN_IN),  # orthonormal columns of length 1 over fan_in rows
])
def test_variances(name, variance):
    assert _draw(name).var() == pytest.approx(variance, rel=0.03)


def test_lecture_gaussians_are_untruncated():
    # Untruncated normals reach past 2 std; Keras' truncated ones never do.
    for name in ("small", "large", "xavier", "he"):
        w = _draw(name)
        assert np.abs(w).max() > 3 * w.std(), name
    assert np.abs(_draw("lecun")).max() < 2.5 * _draw("lecun").std()


def test_orthogonal_columns():
    w = _draw("orthogonal")
    np.testing.assert_allclose(w.T @ w, np.eye(FAN_OUT), atol=1e-4)


@pytest.mark.parametrize("name", initializers.NAMES)
def test_every_name_gives_a_fresh_keras_initializer(name):
    a, b = initializers.get(name), initializers.get(name)
    assert isinstance(a, keras.initializers.Initializer) and a is not b


def test_none_aliases_dicts_objects_and_errors():
    assert initializers.get(None) is None
    assert initializers.get("small", scale=0.5).stddev == pytest.approx(0.5)
    assert initializers.get({"name": "small", "scale": 0.2}).stddev == pytest.approx(0.2)
    assert isinstance(initializers.get("kaiming"), keras.initializers.VarianceScaling)
    obj = keras.initializers.Zeros()
    assert initializers.get(obj) is obj
    assert isinstance(initializers.get(keras.initializers.serialize(obj)), keras.initializers.Zeros)
    with pytest.raises(ValueError, match="small, large, xavier"):
        initializers.get("uniform")
    with pytest.raises(ValueError, match="scale"):
        initializers.get("he", scale=2.0)
