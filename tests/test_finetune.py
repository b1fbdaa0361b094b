"""recipes.finetune: new head, frozen body, two-phase fine-tuning, saving, bad inputs.

Fast tests run on tiny digits subsets; the slow one measures the lecture's claim on the real
Fashion-MNIST (classes 0-4 -> 5-9).
"""

import os

import keras
import numpy as np
import pytest

import models
from recipes import data, finetune, io, preprocessing, train

FASHION = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"


@pytest.fixture(scope="module")
def digits():
    full = data.load("digits")
    return finetune.class_subset(full, range(5, 10), limit=200)


def mlp(hidden=(16,), **kw):
    return models.build({"arch": "mlp", "hidden": hidden, **kw}, (8, 8, 1), 5)


def weights(layer):
    return [np.array(w) for w in layer.get_weights()]


def same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


class Recorder(keras.callbacks.Callback):
    """Per fit call: the body's weights before and after, and the optimizer's lr."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def _body(self):
        names = [layer.name for layer in self.model.layers]
        return weights(self.model.get_layer("body")) if "body" in names else None

    def on_train_begin(self, logs=None):
        lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        self.calls.append({"lr": lr, "before": self._body()})

    def on_train_end(self, logs=None):
        self.calls[-1]["after"] = self._body()


# --- build --------------------------------------------------------------------------------


def test_head_replaced_and_base_untouched():
    base = models.build({"arch": "mlp", "hidden": (16,)}, (8, 8, 1), 10)
    before = weights(base)
    model = finetune.build(base, 3)
    assert model.output_shape == (None, 3)
    assert model.get_layer("logits").kernel.shape == (16, 3)
    body = model.get_layer("body")
    assert body.output.shape == (None, 16) and not body.trainable
    assert "logits" not in [layer.name for layer in body.layers]
    assert all(layer is not base.get_layer(layer.name) for layer in body.layers[1:])
    model.get_layer("body").get_layer("dense_0").kernel.assign(
        np.zeros((64, 16), "float32"))
    assert same(weights(base), before)  # the caller's model is copied, not shared


def test_cut_at_a_feature_map_adds_pooling():
    base = models.build({"arch": "convnet", "widths": (4, 8)}, (8, 8, 1), 10)
    model = finetune.build(base, 4, cut="global_pool", dropout=0.5)
    assert model.get_layer("body").output.shape == (None, 2, 2, 8)
    names = [layer.name for layer in model.layers]
    assert names[-3:] == ["head_pool", "head_dropout", "logits"]
    assert model.output_shape == (None, 4)


def test_default_cut_is_the_last_dense_then_nothing():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(12, activation="relu", name="fc1")(x)
    base = keras.Model(inputs, keras.layers.Dense(7, name="fc2")(x))
    assert finetune.build(base, 2).get_layer("body").output.shape == (None, 12)
    no_dense = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(
        keras.layers.Conv2D(5, 3)(inputs)))
    model = finetune.build(no_dense, 2)  # no classifier: the whole base is the body
    assert model.get_layer("body").output.shape == (None, 5)


def test_application_from_local_weights_file(tmp_path):
    kw = {"input_shape": (32, 32, 3), "alpha": 0.25}
    app = keras.applications.MobileNet(weights=None, include_top=False, pooling="avg", **kw)
    path = str(tmp_path / "mobilenet.weights.h5")
    app.save_weights(path)
    model = finetune.build("MobileNet", 4, weights=path, application_kw=kw)
    assert model.output_shape == (None, 4)
    assert same(weights(model.get_layer("body")), weights(app))


# --- run ----------------------------------------------------------------------------------


@pytest.mark.parametrize("precompute", [True, False])
def test_feature_extractor_trains_only_the_head(digits, precompute):
    base = mlp(norm="batch", dropout=0.2)
    body_before = weights(base)[: -2]  # everything but the logits kernel and bias
    result = finetune.run(base, digits, mode="feature_extractor", head_epochs=2,
                          learning_rate=1e-2, batch_size=32, precompute=precompute)
    model = result["model"]
    assert same(weights(model.get_layer("body")), body_before)  # BN statistics included
    assert list(result["phases"]) == ["head"] and result["epochs"] == 2
    assert result["phases"]["head"]["precomputed"] is precompute
    assert result["phases"]["head"]["trainable_parameters"] == 16 * 5 + 5
    assert result["test_accuracy"] > 0.2 and result["cut"] == "logits"
    model.evaluate(digits.test.x, keras.utils.to_categorical(digits.test.y, 5),
                   verbose=0)  # the returned model is compiled


def test_precomputed_features_give_the_same_head(digits):
    base = mlp()
    runs = [finetune.run(base, digits, mode="feature_extractor", head_epochs=2,
                         batch_size=32, precompute=p) for p in (True, False)]
    a, b = (r["phases"]["head"]["history"]["loss"] for r in runs)
    np.testing.assert_allclose(a, b, rtol=1e-4)


def test_finetune_changes_the_body_only_in_phase_two_with_a_lower_lr(digits):
    base = mlp(hidden=(16, 16), norm="batch")
    recorder = Recorder()
    result = finetune.run(base, digits, mode="finetune", head_epochs=2, epochs=2,
                          learning_rate=1e-2, lr_scale=0.1, batch_size=32, precompute=False,
                          callbacks=[recorder])
    head, tune = recorder.calls
    assert head["lr"] == pytest.approx(1e-2) and tune["lr"] == pytest.approx(1e-3)
    assert same(head["before"], head["after"])
    assert same(head["after"], tune["before"])
    changed = [not np.array_equal(x, y) for x, y in zip(tune["before"], tune["after"])]
    assert any(changed)
    body = result["model"].get_layer("body")
    # BatchNormalization stays in inference mode: moving statistics never change.
    for name in ("norm_0", "norm_1"):
        layer = body.get_layer(name)
        np.testing.assert_array_equal(layer.moving_mean.numpy(),
                                      base.get_layer(name).moving_mean.numpy())
    p = result["phases"]
    assert p["finetune"]["learning_rate"] == pytest.approx(p["head"]["learning_rate"] * 0.1)
    assert p["finetune"]["trainable_parameters"] > p["head"]["trainable_parameters"]
    assert result["epochs"] == 4 and "test_accuracy" in p["head"]


def test_unfreeze_top_layers(digits):
    recorder = Recorder()
    result = finetune.run(mlp(hidden=(16, 16)), digits, head_epochs=1, epochs=1, unfreeze=1,
                          batch_size=32, callbacks=[recorder])
    assert result["phases"]["finetune"]["unfrozen_layers"] == ["dense_1"]
    body = result["model"].get_layer("body")
    assert [layer.trainable for layer in body.layers if layer.weights] == [False, True]
    before, after = recorder.calls[-1]["before"], recorder.calls[-1]["after"]
    assert same(before[:2], after[:2])  # dense_0 kernel and bias
    assert not np.array_equal(before[2], after[2])  # dense_1 kernel


def test_save_and_reload_in_safe_mode(digits, tmp_path):
    workdir = str(tmp_path / "ft")
    result = finetune.run(mlp(norm="batch"), digits, head_epochs=1, epochs=1,
                          batch_size=32, workdir=workdir)
    for name in ("model.keras", "summary.json", "history.csv", preprocessing.JSON_NAME):
        assert os.path.isfile(os.path.join(workdir, name))
    rows = io.read_csv(os.path.join(workdir, "history.csv"))
    assert [r["phase"] for r in rows] == ["head", "finetune"]
    summary = io.read_json(os.path.join(workdir, "summary.json"), what="summary")
    assert summary["test_accuracy"] == pytest.approx(result["test_accuracy"])
    model = keras.saving.load_model(os.path.join(workdir, "model.keras"), safe_mode=True)
    x = np.random.default_rng(0).normal(size=(8, 8, 8, 1)).astype("float32")
    np.testing.assert_allclose(model.predict(x, verbose=0),
                               result["model"].predict(x, verbose=0), atol=1e-6)
    # BatchNormalization stays frozen, so in inference mode, after reloading.
    assert not model.get_layer("body").get_layer("norm_0").trainable
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x, training=True)),
                               keras.ops.convert_to_numpy(model(x, training=False)), atol=1e-6)
    with pytest.raises(ValueError, match="workdir"):
        finetune.run(mlp(), digits, head_epochs=1, epochs=1, workdir=workdir)


def test_workdir_base_reuses_its_preprocessor(digits, tmp_path):
    other = finetune.class_subset(data.load("digits"), range(5), limit=200)
    base_dir = str(tmp_path / "base")
    train.run({"model": {"hidden": (16,)}, "train": {"epochs": 1, "verbose": 0},
               "monitor": {"tensorboard": False}}, base_dir, splits=other)
    out = str(tmp_path / "ft")
    result = finetune.run(base_dir, digits, mode="feature_extractor", head_epochs=1,
                          workdir=out)
    assert result["base"] == base_dir
    a = preprocessing.Preprocessor.load(base_dir).params["mean"]
    np.testing.assert_array_equal(preprocessing.Preprocessor.load(out).params["mean"], a)


def test_config_tree_picks_the_data():
    result = finetune.run(mlp(), {"dataset": {"name": "digits", "limit": 200},
                                  "train": {"batch_size": 50}},
                          mode="feature_extractor", head_epochs=1)
    assert result["dataset"] == "digits" and result["num_classes"] == 10
    assert result["model"].output_shape == (None, 10)


def test_helpers():
    assert finetune.epochs_to_reach([0.5, 0.8, 0.9, 0.85], 0.8) == 2
    assert finetune.epochs_to_reach([0.5], 0.9) is None
    s = finetune.class_subset(data.load("digits"), [7, 3], limit=50)
    assert s.info.num_classes == 2 and s.info.class_names == ("7", "3")
    assert len(s.train) == 50 and set(np.unique(s.test.y)) == {0, 1}


# --- bad inputs ---------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, match", [
    ({"mode": "linear"}, "mode="),
    ({"head_epochs": 0}, "head_epochs"),
    ({"epochs": 0}, "epochs"),
    ({"lr_scale": 0.0}, "lr_scale"),
    ({"lr_scale": 2.0}, "lr_scale"),
    ({"learning_rate": -1.0}, "learning_rate"),
    ({"cut": "nope"}, "cut='nope'"),
    ({"cut": "inputs"}, "cut='inputs' is the input layer"),
    ({"cut": "flatten"}, "cut='flatten' takes the model's input"),
    ({"unfreeze": 0}, "unfreeze"),
    ({"unfreeze": 5}, "unfreeze=5"),
    ({"dropout": 1.0}, "dropout"),
    ({"preprocessor": "whiten"}, "preprocessor="),
    ({"weights": "x.h5"}, "weights="),
    ({"config": {"train": {}}, "splits_or_config": {"dataset": {"name": "digits"}}},
     "config="),
    ({"config": {"train": {"epochs": 3, "progressive_epochs": 1}}}, "progressive_epochs=1"),
])
def test_bad_arguments_raise(digits, kwargs, match):
    kwargs = {"splits_or_config": digits, "head_epochs": 1, "epochs": 1, **kwargs}
    with pytest.raises(ValueError, match=match):
        finetune.run(mlp(), kwargs.pop("splits_or_config"), **kwargs)


def test_bad_bases_raise(digits, tmp_path):
    with pytest.raises(ValueError, match="base=.*no such model file"):
        finetune.build(str(tmp_path / "missing.keras"), 3)
    with pytest.raises(ValueError, match="base=.*no such model file"):
        finetune.build(str(tmp_path), 3)  # a directory without model.keras
    bad = tmp_path / "bad.keras"
    bad.write_text("not a zip")
    with pytest.raises(ValueError, match="cannot load"):
        finetune.build(str(bad), 3)
    with pytest.raises(ValueError, match="weights: keras.applications.MobileNet needs"):
        finetune.build("MobileNet", 3)
    with pytest.raises(ValueError, match="weights='imagenet'|never downloads"):
        finetune.build("MobileNet", 3, weights="imagenet")
    with pytest.raises(ValueError, match="weights=.*no such file"):
        finetune.build("MobileNet", 3, weights=str(tmp_path / "w.h5"))
    with pytest.raises(ValueError, match="num_classes"):
        finetune.build(mlp(), 1)
    with pytest.raises(ValueError, match="base must be"):
        finetune.build(42, 3)
    wrong_shape = models.build({"arch": "mlp"}, (4, 4, 1), 3)
    with pytest.raises(ValueError, match="inputs of shape"):
        finetune.run(wrong_shape, digits, head_epochs=1, epochs=1)
    with pytest.raises(ValueError, match="classes="):
        finetune.class_subset(digits, [1])


# --- the lecture's claim, on real data ----------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(FASHION), reason="Fashion-MNIST files not installed")
def test_transfer_needs_fewer_epochs_than_scratch(tmp_path):
    """Classes 0-4 (all ~27.5k images: the "big dataset") -> classes 5-9 (300 images).

    Same convnet, optimizer, learning rate (3e-3) and batch size for both; transfer is the
    lecture's "very little data: linear classifier on the top layer".
    """
    full = data.load("fashion_mnist", val_size=5000)
    old = finetune.class_subset(full, range(5))
    new = finetune.class_subset(full, range(5, 10), limit=300)
    cfg = {"model": {"arch": "convnet", "widths": (16, 32), "head": "flatten"},
           "optimizer": {"learning_rate": 3e-3},
           "train": {"epochs": 3, "batch_size": 64, "verbose": 0},
           "monitor": {"tensorboard": False}}
    base = train.run(cfg, str(tmp_path / "base"), splits=old)
    assert base["val_accuracy"] > 0.88

    budget, target = 10, 0.92
    cfg["train"].update(epochs=budget, batch_size=32)
    scratch = train.run(cfg, str(tmp_path / "scratch"), splits=new)
    scratch_curve = [float(r["val_accuracy"])
                     for r in io.read_csv(str(tmp_path / "scratch" / "history.csv"))]
    transfer = finetune.run(str(tmp_path / "base"), new, mode="feature_extractor",
                            head_epochs=budget, learning_rate=3e-3, batch_size=32)
    transfer_curve = transfer["phases"]["head"]["history"]["val_accuracy"]
    with_transfer = finetune.epochs_to_reach(transfer_curve, target)
    without = finetune.epochs_to_reach(scratch_curve, target)
    print(f"\nepochs to val accuracy {target}: transfer {with_transfer}, scratch {without}; "
          f"val curves: transfer {np.round(transfer_curve, 3).tolist()}, scratch "
          f"{np.round(scratch_curve, 3).tolist()}; test accuracy: transfer "
          f"{transfer['test_accuracy']:.4f}, scratch {scratch['test_accuracy']:.4f}; head "
          f"seconds {transfer['phases']['head']['seconds']}, scratch {scratch['fit_seconds']}")
    assert with_transfer is not None
    assert without is None or with_transfer < without
    assert transfer["test_accuracy"] >= scratch["test_accuracy"] - 0.01
