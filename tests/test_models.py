"""models.build and the three architecture families (mlp, convnet, resnet)."""

import itertools
import os

import keras
import ml_collections
import numpy as np
import pytest

import models
from models import activations, initializers, norms
from models.layers import MaxoutActivation, WeightNormalization

POSITIONS = ("before_activation", "after_activation")
TINY = {
    "mlp": ({"hidden": (4,), "groups": 2}, (6,)),
    "convnet": ({"arch": "convnet", "widths": (4,), "groups": 2}, (4, 4, 2)),
    "resnet": ({"arch": "resnet", "depth": 8, "width": 2, "groups": 2}, (4, 4, 2)),
}


def _step(cfg, input_shape, num_classes=3):
    """Builds, takes one SGD step on a batch of 4 and returns (model, loss)."""
    model = models.build(cfg, input_shape, num_classes)
    model.compile(
        keras.optimizers.SGD(0.1),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        run_eagerly=True,  # tracing costs ~4x a tiny eager step; nothing here needs a graph
    )
    x = np.random.default_rng(0).standard_normal((4, *input_shape)).astype("float32")
    loss = model.train_on_batch(x, np.array([0, 1, 2, 0]))
    return model, float(loss)


def _cfg(arch, **kw):
    base, shape = TINY[arch]
    return {**base, **kw}, shape


# --- config -------------------------------------------------------------------------------


def test_default_config_fields():
    c = models.default_config()
    assert isinstance(c, ml_collections.ConfigDict)
    assert set(c) == {
        "arch", "hidden", "widths", "blocks_per_stage", "head", "depth", "width", "variant",
        "activation", "activation_kw", "init", "init_scale", "head_init_scale", "bias_init", "norm",
        "norm_position", "groups", "dropout", "l1", "l2", "max_norm", "kwargs",
    }
    assert (c.arch, tuple(c.hidden), c.activation, c.init, c.norm) == (
        "mlp", (50,), "relu", "he", "none")


def test_build_accepts_configdict_dict_and_none():
    for cfg in (models.default_config(), {"hidden": (5,)}, None):
        model = models.build(cfg, (8, 8, 1), 10)
        assert model.output.shape == (None, 10)


def test_unknown_fields_and_names_raise_with_the_valid_list():
    with pytest.raises(ValueError, match=r"\['bogus', 'widht'\]"):
        models.build({"widht": 3, "bogus": 1}, (4,), 2)
    for field, names in (("activation", activations.NAMES), ("init", initializers.NAMES),
                         ("norm", norms.NAMES)):
        with pytest.raises(ValueError, match=names[-1]):
            models.build({field: "nope"}, (4,), 2)
    with pytest.raises(ValueError, match="resnet"):
        models.build({"arch": "vgg"}, (4,), 2)
    with pytest.raises(ValueError, match="takes"):
        models.build({"activation": "relu", "activation_kw": {"alpha": 0.1}}, (4,), 2)


@pytest.mark.parametrize("arch", ["convnet", "resnet"])
def test_conv_archs_need_images(arch):
    with pytest.raises(ValueError, match="rank-3"):
        models.build({"arch": arch}, (64,), 10)


def test_mlp_accepts_vectors_and_images():
    assert models.build({}, (17,), 3).output.shape == (None, 3)
    assert models.build({}, (4, 4, 3), 3).output.shape == (None, 3)


def test_bad_values_raise():
    for cfg in ({"arch": "resnet", "depth": 9}, {"arch": "resnet", "variant": "f"},
                {"norm_position": "middle"}, {"dropout": 1.0},
                {"arch": "convnet", "head": "mean"}, {"norm": "group", "hidden": (6,)}):
        with pytest.raises(ValueError):
            models.build(cfg, (8, 8, 3), 2)


# --- every name on every architecture takes a finite training step ------------------------


@pytest.mark.parametrize("norm", norms.NAMES)
@pytest.mark.parametrize("activation", activations.NAMES)
def test_mlp_every_activation_init_norm_position(activation, norm):
    for init, position in itertools.product(initializers.NAMES, POSITIONS):
        cfg, shape = _cfg("mlp", activation=activation, init=init, norm=norm,
                          norm_position=position, dropout=0.1, l2=1e-3)
        _, loss = _step(cfg, shape)
        assert np.isfinite(loss), (init, position)


@pytest.mark.parametrize("activation", activations.NAMES)
def test_convnet_every_activation_norm_position(activation):
    inits = itertools.cycle(initializers.NAMES)
    for norm, position in itertools.product(norms.NAMES, POSITIONS):
        cfg, shape = _cfg("convnet", activation=activation, init=next(inits), norm=norm,
                          norm_position=position, head="flatten" if norm == "batch" else
                          "global_pool", l1=1e-4, max_norm=3.0)
        _, loss = _step(cfg, shape)
        assert np.isfinite(loss), (norm, position)


@pytest.mark.parametrize("variant", ["a", "b", "c", "d", "e"])
def test_resnet_every_variant_activation_norm_init(variant):
    cases = itertools.zip_longest(activations.NAMES, norms.NAMES, initializers.NAMES,
                                  itertools.islice(itertools.cycle(POSITIONS), 9))
    for activation, norm, init, position in cases:
        cfg, shape = _cfg("resnet", variant=variant, activation=activation or "relu",
                          norm=norm or "batch", init=init or "he", norm_position=position)
        _, loss = _step(cfg, shape)
        assert np.isfinite(loss), (activation, norm, init, position)


# --- structure ----------------------------------------------------------------------------


def _kinds(model, contains=""):
    kinds = {keras.layers.Dense: "linear", keras.layers.Conv2D: "linear",
             WeightNormalization: "linear", keras.layers.Add: "add",
             keras.layers.Dropout: "dropout", keras.layers.BatchNormalization: "norm",
             keras.layers.LayerNormalization: "norm", keras.layers.GroupNormalization: "norm"}
    out = []
    for layer in model.layers:
        if contains not in layer.name:
            continue
        if layer.name.startswith("act_"):
            out.append("act")
        elif type(layer) in kinds:
            out.append(kinds[type(layer)])
    return out


@pytest.mark.parametrize("arch", ["mlp", "convnet"])
def test_layer_order_follows_norm_position(arch):
    cfg, shape = _cfg(arch, norm="batch", dropout=0.5, hidden=(4,), widths=(4,))
    before = _kinds(models.build(cfg, shape, 3))
    after = _kinds(models.build({**cfg, "norm_position": "after_activation"}, shape, 3))
    assert before == ["linear", "norm", "act", "dropout", "linear"]
    assert after == ["linear", "act", "norm", "dropout", "linear"]


@pytest.mark.parametrize("norm, position, has_bias", [
    ("batch", "before_activation", False), ("layer", "before_activation", False),
    ("group", "before_activation", False), ("instance", "before_activation", False),
    ("batch", "after_activation", True), ("none", "before_activation", True),
    ("weight", "before_activation", True),
])
@pytest.mark.parametrize("arch", ["mlp", "convnet"])
def test_bias_dropped_when_a_shifting_norm_follows(arch, norm, position, has_bias):
    cfg, shape = _cfg(arch, norm=norm, norm_position=position)
    model = models.build(cfg, shape, 3)
    linears = [lay for lay in model.layers if isinstance(lay, (keras.layers.Dense,
               keras.layers.Conv2D, WeightNormalization)) and lay.name != "logits"]
    for layer in linears:
        inner = layer.layer if isinstance(layer, WeightNormalization) else layer
        assert inner.use_bias is has_bias
        assert isinstance(layer, WeightNormalization) is (norm == "weight")
    assert model.get_layer("logits").use_bias


def test_head_is_plain_regularized_dense():
    model = models.build({"norm": "batch", "l2": 1e-2, "l1": 1e-3, "max_norm": 2.0}, (6,), 3)
    head = model.layers[-1]
    assert head.name == "logits" and type(head) is keras.layers.Dense
    assert head.activation is keras.activations.linear
    assert isinstance(head.kernel_regularizer, keras.regularizers.L1L2)
    assert isinstance(head.kernel_constraint, keras.constraints.MaxNorm)
    hidden = model.get_layer("dense_0")
    assert hidden.kernel_regularizer.l2 == pytest.approx(1e-2)
    assert hidden.kernel_regularizer.l1 == pytest.approx(1e-3)


def test_maxout_widens_the_linear_layer_before_the_norm():
    model = models.build({"activation": "maxout", "activation_kw": {"pieces": 3},
                          "hidden": (5,), "norm": "batch"}, (6,), 2)
    assert model.get_layer("dense_0").units == 15
    assert model.get_layer("norm_0").output.shape == (None, 15)
    assert isinstance(model.get_layer("act_0"), MaxoutActivation)
    assert model.get_layer("act_0").output.shape == (None, 5)


def test_initializers_reach_the_kernels():
    model = models.build({"init": "small", "init_scale": 0.5, "hidden": (400,),
                          "bias_init": 0.01}, (300,), 2)
    dense = model.get_layer("dense_0")
    assert dense.kernel.numpy().std() == pytest.approx(0.5, rel=0.02)
    np.testing.assert_allclose(dense.bias.numpy(), 0.01)
    he = models.build({"init": "he", "hidden": (400,)}, (300,), 2).get_layer("dense_0")
    assert he.kernel.numpy().std() == pytest.approx(np.sqrt(2 / 300), rel=0.02)


_VARIANT_ORDER = {  # He et al. 2016 Fig. 4, block s0b0 (no projection), norm=batch
    "a": ["linear", "norm", "act", "linear", "norm", "add", "act"],
    "b": ["linear", "norm", "act", "linear", "add", "norm", "act"],
    "c": ["linear", "norm", "act", "linear", "norm", "act", "add"],
    "d": ["act", "linear", "norm", "act", "linear", "norm", "add"],
    "e": ["norm", "act", "linear", "norm", "act", "linear", "add"],
}


@pytest.mark.parametrize("variant", sorted(_VARIANT_ORDER))
def test_resnet_variant_op_order(variant):
    cfg, shape = _cfg("resnet", variant=variant, norm="batch")
    model = models.build(cfg, shape, 3)
    assert _kinds(model, "s0b0") == _VARIANT_ORDER[variant]


def test_resnet_norm_position_swaps_the_pair_between_the_convs():
    cfg, shape = _cfg("resnet", variant="a", norm="batch", norm_position="after_activation")
    kinds = _kinds(models.build(cfg, shape, 3), "s0b0")
    assert kinds == ["linear", "act", "norm", "linear", "norm", "add", "act"]


def test_resnet_depth_sets_the_number_of_blocks():
    model = models.build({"arch": "resnet", "depth": 14, "width": 2}, (8, 8, 3), 3)
    adds = [lay.name for lay in model.layers if isinstance(lay, keras.layers.Add)]
    assert len(adds) == 6  # 3 stages x n=2
    assert model.get_layer("global_pool").output.shape == (None, 8)  # 4 * width


# --- save and reload ----------------------------------------------------------------------


@pytest.mark.parametrize("arch, extra", [
    ("mlp", {"activation": "maxout", "norm": "weight"}),
    ("mlp", {"activation": "prelu", "norm": "batch", "dropout": 0.2, "l2": 1e-3}),
    ("convnet", {"activation": "maxout", "norm": "group"}),
    ("convnet", {"activation": "leaky_relu", "norm": "weight", "max_norm": 2.0}),
    ("resnet", {"activation": "prelu", "norm": "batch", "variant": "a"}),
    ("resnet", {"activation": "maxout", "norm": "weight", "variant": "e"}),
    ("resnet", {"activation": "elu", "norm": "instance", "variant": "d"}),
])
def test_save_load_safe_mode_predicts_identically(tmp_path, arch, extra):
    cfg, shape = _cfg(arch, **extra)
    model, _ = _step(cfg, shape)
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    x = np.random.default_rng(1).standard_normal((5, *shape)).astype("float32")
    np.testing.assert_array_equal(model.predict(x, verbose=0), loaded.predict(x, verbose=0))


@pytest.mark.parametrize("scale", [0.1, 1.0])
def test_head_starts_head_init_scale_times_smaller(scale):
    """He-initialised logits on standardized inputs start with std ~2 and loss >> ln C."""
    model = models.build({"hidden": (400,), "init": "he", "head_init_scale": scale}, (400,), 400)
    head = model.get_layer("logits").kernel.numpy()
    np.testing.assert_allclose(head.std(), scale * np.sqrt(2 / 400), rtol=0.05)
    hidden = model.get_layer("dense_0").kernel.numpy()
    np.testing.assert_allclose(hidden.std(), np.sqrt(2 / 400), rtol=0.05)


def test_head_init_scale_must_be_positive():
    with pytest.raises(ValueError, match="head_init_scale"):
        models.build({"head_init_scale": 0.0}, (8,), 3)
