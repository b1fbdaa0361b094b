"""models.inspect: activation statistics and their plot."""

import json

import numpy as np
import pytest

import models
from models import inspect

X = np.random.default_rng(0).standard_normal((200, 8)).astype("float32")


def test_records_one_per_hidden_layer_json_ready():
    model = models.build({"hidden": (6, 5, 4), "activation": "tanh", "dropout": 0.5}, (8,), 3)
    stats = inspect.activation_stats(model, X, bins=7)
    assert [r["name"] for r in stats] == ["act_0", "act_1", "act_2"]
    assert [r["shape"] for r in stats] == [[6], [5], [4]]
    for r in stats:
        assert set(r) >= {"name", "mean", "std", "saturated", "dead", "hist"}
        assert len(r["hist"]["counts"]) == 7 and len(r["hist"]["edges"]) == 8
        assert sum(r["hist"]["counts"]) == 200 * r["shape"][0]
    json.dumps(stats)


def test_relu_with_huge_negative_bias_is_all_dead():
    model = models.build({"hidden": (10,), "activation": "relu", "bias_init": -100.0}, (8,), 3)
    (r,) = inspect.activation_stats(model, X)
    assert r["dead"] == 1.0 and r["std"] == 0.0 and r["saturated"] == 0.0


def test_relu_with_huge_positive_bias_is_all_alive():
    model = models.build({"hidden": (10,), "activation": "leaky_relu", "bias_init": 100.0},
                         (8,), 3)
    assert inspect.activation_stats(model, X)[0]["dead"] == 0.0


def test_dead_counts_units_not_values():
    # Half of the units get a huge negative bias, the others a huge positive one.
    model = models.build({"hidden": (10,), "activation": "relu"}, (8,), 3)
    dense = model.get_layer("dense_0")
    dense.bias.assign(np.repeat([-100.0, 100.0], 5).astype("float32"))
    assert inspect.activation_stats(model, X)[0]["dead"] == 0.5


@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
def test_large_weights_saturate(activation):
    model = models.build({"hidden": (20,), "activation": activation, "init": "large",
                          "init_scale": 1.0}, (8,), 3)
    for w in model.get_layer("dense_0").trainable_weights[:1]:
        w.assign(w.numpy() * 100)
    (r,) = inspect.activation_stats(model, X)
    assert r["saturated"] > 0.95 and r["dead"] == 0.0


def test_conv_dead_is_per_channel_and_relu_never_saturates():
    model = models.build({"arch": "convnet", "widths": (4,), "activation": "relu"}, (6, 6, 2), 3)
    conv = model.get_layer("conv_s0b0")
    conv.bias.assign(np.array([-1e4, -1e4, -1e4, 1e4], "float32"))
    x = np.random.default_rng(0).standard_normal((20, 6, 6, 2)).astype("float32")
    (r,) = inspect.activation_stats(model, x)
    assert r["dead"] == 0.75 and r["saturated"] == 0.0 and r["shape"] == [6, 6, 4]


def test_training_mode_uses_batch_statistics():
    model = models.build({"hidden": (10,), "norm": "batch", "activation": "tanh",
                          "init": "large"}, (8,), 3)
    x = X * 50 + 20
    train = inspect.activation_stats(model, x, training=True)[0]
    infer = inspect.activation_stats(model, x, training=False)[0]
    assert train["saturated"] < 0.1 < infer["saturated"]


def test_model_without_activation_layers_raises():
    model = models.build({"hidden": ()}, (8,), 3)
    with pytest.raises(ValueError, match="act_"):
        inspect.activation_stats(model, X)


def test_plot_writes_a_png(tmp_path):
    model = models.build({"hidden": (6, 6)}, (8,), 3)
    stats = inspect.activation_stats(model, X)
    for target in (stats, {"run a": stats, "run b": stats[:1]}):
        path = inspect.plot_activation_stats(target, tmp_path / "stats.png")
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["stats.png"]
