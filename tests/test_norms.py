"""models.norms: the normalization factory."""

import keras
import numpy as np
import pytest

from models import norms
from models.layers import WeightNormalization


@pytest.mark.parametrize("name", norms.NAMES)
@pytest.mark.parametrize("shape", [(4, 8), (4, 3, 3, 8)])
def test_every_name(name, shape):
    x = np.random.default_rng(0).standard_normal(shape).astype("float32") * 5 + 3
    norm = norms.get(name, rank=len(shape), groups=2)
    if name == "none":
        assert norm is None
    elif name == "weight":
        layer = norm(keras.layers.Dense(8) if len(shape) == 2 else keras.layers.Conv2D(8, 3))
        assert isinstance(layer, WeightNormalization)
    else:
        y = keras.ops.convert_to_numpy(norm(x, training=True))
        assert y.shape == shape
        assert abs(y.mean()) < 1e-3 and abs(y.std() - 1) < 0.05


def test_layer_and_instance_mean_what_they_say():
    x = np.random.default_rng(0).standard_normal((2, 3, 3, 4)).astype("float32") * 5 + 3
    y = keras.ops.convert_to_numpy(norms.get("instance", rank=4)(x))
    np.testing.assert_allclose(y.mean(axis=(1, 2)), 0, atol=1e-4)  # per example and channel
    y = keras.ops.convert_to_numpy(norms.get("layer", rank=4)(x))
    np.testing.assert_allclose(y.mean(axis=(1, 2, 3)), 0, atol=1e-4)  # per example
    assert isinstance(norms.get("layer", rank=2), keras.layers.LayerNormalization)


def test_aliases_dicts_objects_and_errors():
    assert isinstance(norms.get("bn"), keras.layers.BatchNormalization)
    assert norms.get({"name": "group", "groups": 4}).groups == 4
    assert norms.get(None) is None
    bn = keras.layers.BatchNormalization(momentum=0.5)
    assert norms.get(bn) is bn
    assert norms.get(keras.layers.serialize(bn)).momentum == pytest.approx(0.5)
    assert set(norms.SHIFTING) | set(norms.WRAPPERS) | {"none"} == set(norms.NAMES)
    with pytest.raises(ValueError, match="none, batch, layer"):
        norms.get("spectral")
