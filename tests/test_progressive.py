"""Progressive resizing (``train.progressive_epochs``, ``train.progressive_scale``).

fastai's progressive resizing (Howard 2018, DAWNBench); Tan & Le 2021, EfficientNetV2's
"progressive learning". The first k epochs train on downscaled images, the rest at full
resolution, with one traced train function for both sizes. Data: scikit-learn's 8x8 digits
upsampled to 16x16 (so half size is 8x8, the smallest side allowed), a few hundred images.
"""

import copy
import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import KillAt, quick

import models
from recipes import data, export, io, pipeline, predict, prepare, sources, train

K, EPOCHS = 2, 4  # two low-resolution epochs, then two at full resolution
_PRECISE = {"rtol": 1e-5, "atol": 1e-5}


@pytest.fixture(scope="module")
def digits16(tmp_path_factory):
    """``npz:`` path of 8-bit digits upsampled to 16x16 (420 train, 80 test images)."""
    digits = data.load("digits")
    x = np.concatenate([digits.train.x, digits.test.x])[:500]
    y = np.concatenate([digits.train.y, digits.test.y])[:500]
    x = np.repeat(np.repeat(np.round(x * 255).astype(np.uint8), 2, axis=1), 2, axis=2)
    path = tmp_path_factory.mktemp("digits16") / "digits16.npz"
    np.savez(path, x_train=x[:420], y_train=y[:420], x_test=x[420:], y_test=y[420:])
    return f"npz:{path}"


def _cfg(name, arch="convnet", **overrides):
    """A tiny progressive run: 4 epochs, the first 2 at half size; no monitors' probes."""
    return quick(EPOCHS, **{
        "dataset.name": name, "dataset.limit": 0, "model.arch": arch, "model.widths": (8, 16),
        "model.depth": 8, "model.width": 4, "train.batch_size": 64,
        "train.progressive_epochs": K, "train.progressive_scale": 0.5,
        "train.save_every_seconds": 0.0, "monitor.update_ratio_every": 0,
        "monitor.first_layer_every": 0, **overrides})


def _epoch_batches(ds, epoch_seed, epoch):
    epoch_seed.set_epoch(epoch)
    return [(x.numpy(), y.numpy()) for x, y in ds]


# ------------------------------------------------------------------------------ the pipeline


def test_first_k_epochs_are_downscaled_the_rest_untouched(digits16):
    # Random pad-and-crop too: the resize comes after augmentation and preprocessing.
    cfg = _cfg(digits16, **{"augment.crop_padding": 2, "augment.flip": "horizontal"})
    splits = prepare.load_splits(cfg)
    pre = prepare.fit_preprocessor(cfg, splits.train.x)
    kw = {"training": True, "num_classes": 10, "preprocessor": pre, "seed": 0}
    on, off = pipeline.EpochSeed(), pipeline.EpochSeed()
    ds = pipeline.make(splits.train.x, splits.train.y, cfg, epoch_seed=on, **kw)
    plain_cfg = copy.deepcopy(cfg)
    plain_cfg.train.progressive_epochs = 0
    plain = pipeline.make(splits.train.x, splits.train.y, plain_cfg, epoch_seed=off, **kw)
    assert tuple(ds.element_spec[0].shape) == (None, None, None, 1)
    assert tuple(plain.element_spec[0].shape) == (None, 16, 16, 1)
    for epoch in (3, 0, 2, 1):  # any order: the size is a function of the epoch alone
        got, full = _epoch_batches(ds, on, epoch), _epoch_batches(plain, off, epoch)
        assert len(got) == len(full) == math.ceil(len(splits.train) / 64)
        for (x, y), (x_full, y_full) in zip(got, full, strict=True):
            np.testing.assert_array_equal(y, y_full)
            if epoch < K:
                assert x.shape[1:] == (8, 8, 1), epoch
                small = tf.image.resize(x_full, (8, 8), antialias=True).numpy()
                np.testing.assert_allclose(x, small, **_PRECISE)
            else:  # bit for bit the batches of a run without progressive resizing
                np.testing.assert_array_equal(x, x_full)


def test_without_an_epoch_seed_every_iteration_is_the_next_epoch(digits16):
    cfg = _cfg(digits16, **{"train.progressive_epochs": 1, "train.progressive_scale": 0.75})
    splits = prepare.load_splits(cfg)
    ds = pipeline.make(splits.train.x, splits.train.y, cfg, training=True, num_classes=10)
    sizes = [{tuple(x.shape[1:3]) for x, _ in ds} for _ in range(3)]
    assert sizes == [{(12, 12)}, {(16, 16)}, {(16, 16)}]  # round(0.75 * 16) = 12
    evaluation = pipeline.make(splits.val.x, splits.val.y, cfg, training=False, num_classes=10)
    assert {tuple(x.shape[1:3]) for x, _ in evaluation} == {(16, 16)}


def test_a_streamed_source_carries_its_epoch_too(digits16):
    cfg = _cfg(digits16, **{"train.progressive_epochs": 1})
    arrays = prepare.load_splits(cfg)
    stream, labels = sources.from_dataset(
        tf.data.Dataset.from_tensor_slices((arrays.train.x, arrays.train.y)), "train")
    assert sources.is_lazy(stream)
    epoch_seed = pipeline.EpochSeed()
    ds = pipeline.make(stream, labels, cfg, training=True, num_classes=10,
                       epoch_seed=epoch_seed)
    assert tuple(ds.element_spec[0].shape) == (None, None, None, 1)
    for epoch, side in ((1, 16), (0, 8), (2, 16)):
        batches = _epoch_batches(ds, epoch_seed, epoch)
        assert {x.shape[1:3] for x, _ in batches} == {(side, side)}, epoch
        assert sum(len(y) for _, y in batches) == len(labels)


# --------------------------------------------------------------------------------- the models


@pytest.mark.parametrize("arch", ["convnet", "resnet"])
def test_variable_size_models_take_both_sizes_with_the_same_layers(arch):
    cfg = {"arch": arch, "widths": (8, 16, 32), "depth": 8, "width": 4}
    fixed = models.build(cfg, (16, 16, 1), 10)
    free = models.build(cfg, (16, 16, 1), 10, variable_size=True)
    assert free.input_shape == (None, None, None, 1)
    assert [type(a).__name__ for a in fixed.layers] == [type(b).__name__ for b in free.layers]
    assert fixed.count_params() == free.count_params()
    for side in (8, 16):
        assert free(np.zeros((2, side, side, 1), np.float32)).shape == (2, 10)


def test_convnet_plans_pooling_from_the_configured_size():
    assert models.convnet.pooled_stages(16, 16, 6) == [True] * 4 + [False] * 2
    free = models.build({"arch": "convnet", "widths": (4,) * 6}, (16, 16, 1), 3,
                        variable_size=True)
    assert sum(type(a).__name__ == "MaxPooling2D" for a in free.layers) == 4


@pytest.mark.parametrize("cfg, match", [
    ({"arch": "convnet", "head": "flatten"}, "model.head=global_pool"),
    ({"arch": "mlp"}, "model.arch='mlp'")])
def test_builders_refuse_what_cannot_take_two_sizes(cfg, match):
    with pytest.raises(ValueError, match=match):
        models.build(cfg, (16, 16, 1), 10, variable_size=True)


# ------------------------------------------------------------------- training end to end


class _Traces:
    """Counts the Python calls of ``keras.Model.train_step``: one per trace, none per step."""

    def __init__(self, monkeypatch):
        self.inputs = []
        original = keras.Model.train_step

        def counting(model, batch):
            self.inputs.append(tuple(batch[0].shape))
            return original(model, batch)

        monkeypatch.setattr(keras.Model, "train_step", counting)


class _Functions(keras.callbacks.Callback):
    """Reads the tracing count of the tf.function that ``fit`` runs every step."""

    counts: dict

    def on_train_end(self, logs=None):
        fn = self.model.train_function
        cells = zip(fn.__code__.co_freevars, fn.__closure__ or ())
        self.counts = {name: cell.cell_contents.experimental_get_tracing_count()
                       for name, cell in cells
                       if hasattr(cell.cell_contents, "experimental_get_tracing_count")}


@pytest.mark.parametrize("arch", ["convnet", "resnet"])
def test_trains_end_to_end_with_one_trace_for_both_sizes(digits16, tmp_path, monkeypatch, arch):
    traces, functions = _Traces(monkeypatch), _Functions()
    summary = train.run(_cfg(digits16, arch), str(tmp_path / "run"), extra_callbacks=[functions])
    assert summary["epochs"] == EPOCHS and summary["stopped_reason"] == "completed"
    rows = io.read_csv(str(tmp_path / "run" / "history.csv"))
    assert all(math.isfinite(float(r["loss"])) for r in rows)
    # One shape-agnostic trace (tf.function's variable-creating first call traces twice at
    # most), never one per size, epoch or batch.
    assert 1 <= len(traces.inputs) <= 2
    assert set(traces.inputs) == {(None, None, None, 1)}
    assert functions.counts and set(functions.counts.values()) == {1}, functions.counts
    model = keras.saving.load_model(str(tmp_path / "run" / "model.keras"), safe_mode=True)
    assert model.input_shape == (None, None, None, 1)


@pytest.fixture(scope="module")
def uninterrupted(digits16, tmp_path_factory):
    cfg = _cfg(digits16, **{"augment.crop_padding": 2, "model.dropout": 0.1})
    workdir = str(tmp_path_factory.mktemp("full") / "run")
    return cfg, train.run(cfg, workdir), workdir


@pytest.mark.parametrize("after", [K - 1, K])  # killed in the low-resolution phase, at its end
def test_resumed_run_has_the_uninterrupted_weights(uninterrupted, tmp_path, after):
    cfg, full, full_dir = uninterrupted
    workdir = str(tmp_path / "killed")
    with pytest.raises(KeyboardInterrupt):
        train.run(cfg, workdir, extra_callbacks=[KillAt(after)])
    assert len(io.read_csv(os.path.join(workdir, "history.csv"))) == after
    resumed = train.run(cfg, workdir)
    for name in ("model.keras", "best.keras"):
        a = keras.saving.load_model(os.path.join(full_dir, name), safe_mode=True)
        b = keras.saving.load_model(os.path.join(workdir, name), safe_mode=True)
        for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
            np.testing.assert_array_equal(wa, wb)
    rows_full = io.read_csv(os.path.join(full_dir, "history.csv"))
    rows = io.read_csv(os.path.join(workdir, "history.csv"))
    assert [r["loss"] for r in rows] == [r["loss"] for r in rows_full]
    assert resumed["test_loss"] == full["test_loss"]


def test_test_time_crops_predict_and_export_take_the_variable_size_model(digits16, tmp_path):
    cfg = _cfg(digits16, **{"train.epochs": 2, "train.progressive_epochs": 1,
                            "evaluate.tta": "five_crop", "monitor.activations_every": 0,
                            "monitor.gradient_norms_every": 0})
    workdir = str(tmp_path / "run")
    summary = train.run(cfg, workdir)
    assert 0 <= summary["test_tta_accuracy"] <= 1
    x = np.load(digits16.removeprefix("npz:"))["x_test"]
    result = predict.predict(workdir, x)
    assert np.mean(result["class_ids"] == np.load(digits16.removeprefix("npz:"))["y_test"]) \
        == pytest.approx(summary["test_tta_accuracy"], abs=1e-6)
    served = keras.saving.load_model(export.export(workdir)["model"], safe_mode=True)
    np.testing.assert_allclose(served.predict(x, verbose=0), result["probabilities"],
                               rtol=1e-4, atol=1e-5)


# -------------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("overrides, field", [
    ({"model.head": "flatten"}, "model.head=global_pool"),
    ({"model.arch": "mlp"}, "train.progressive_epochs"),
    ({"train.progressive_epochs": EPOCHS}, "train.progressive_epochs=4 must be < train.epochs"),
    ({"train.progressive_epochs": -1}, "train.progressive_epochs=-1"),
    ({"train.progressive_scale": 0.0}, "train.progressive_scale=0.0"),
    ({"train.progressive_scale": 1.0}, "train.progressive_scale=1.0"),
    ({"train.progressive_scale": math.nan}, "train.progressive_scale=nan"),
    ({"train.progressive_scale": 0.4}, r"train.progressive_scale=0.4 .* 6x6.*>= 0.469"),
    ({"augment.crop_size": 12, "evaluate.tta": "ten_crop", "train.progressive_scale": 0.75},
     "evaluate.tta=ten_crop .* augment.crop_size=0"),
    ({"dataset.preprocess": "zca"}, "dataset.preprocess=zca"),
    ({"model.widths": (4, 4, 4, 4)}, "train.progressive_scale=0.5 .* pools 4 times"),
])
def test_refusals_name_the_field_before_anything_is_written(digits16, tmp_path, overrides,
                                                              field):
    workdir = tmp_path / "run"
    with pytest.raises(ValueError, match=field):
        train.run(_cfg(digits16, **overrides), str(workdir))
    assert not workdir.exists()


def test_a_users_model_is_refused(digits16, tmp_path):
    def user_model():
        inputs = keras.Input((16, 16, 1))
        x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
        return keras.Model(inputs, keras.layers.Dense(10)(x))

    with pytest.raises(ValueError, match="train.progressive_epochs=2 .* a user's network"):
        train.run(_cfg(digits16), str(tmp_path / "run"), model=user_model)
    assert not (tmp_path / "run").exists()


def test_vectors_are_refused():
    with pytest.raises(ValueError, match="train.progressive_epochs=2 downscales images"):
        pipeline.progressive_size(_cfg("digits"), (64,))
