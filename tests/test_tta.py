"""recipes.tta: test-time crop averaging."""

import math

import keras
import numpy as np
import pytest

from recipes import tta

N, H, W, C, K = 6, 8, 8, 3, 4  # images, height, width, channels, classes
CROP = 6


def _images(seed=0, n=N, h=H, w=W):
    return np.random.default_rng(seed).normal(size=(n, h, w, C)).astype("float32")


def _conv(size=CROP):
    """A small convnet whose output depends on where things are (not flip-invariant)."""
    inputs = keras.Input((size, size, C))
    h = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    h = keras.layers.Flatten()(h)
    return keras.Model(inputs, keras.layers.Dense(K)(h))


def _mean_model(size=CROP):
    """Logits depend only on the per-channel mean of the input: exactly flip-invariant."""
    inputs = keras.Input((size, size, C))
    h = keras.layers.GlobalAveragePooling2D()(inputs)
    return keras.Model(inputs, keras.layers.Dense(K)(h))


def _softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def test_crop_windows_positions():
    assert tta.crop_windows("center", (8, 8), 6) == [(1, 1, False)]
    assert tta.crop_windows("center", (7, 9), (4, 4)) == [(1, 2, False)]  # int((H − h)/2)
    five = tta.crop_windows("five_crop", (8, 10), (6, 6))
    assert five == [(0, 0, False), (0, 4, False), (2, 0, False), (2, 4, False), (1, 2, False)]
    ten = tta.crop_windows("ten_crop", (8, 10), (6, 6))
    assert ten[:5] == five and [c.flip for c in ten] == [False] * 5 + [True] * 5
    assert [(c.top, c.left) for c in ten[5:]] == [(c.top, c.left) for c in five]
    grid = tta.crop_windows("grid", (8, 8), 4, grid=3)
    assert [(c.top, c.left) for c in grid] == [(t, s) for t in (0, 2, 4) for s in (0, 2, 4)]
    assert tta.crop_windows("grid", (8, 8), 4, grid=1) == tta.crop_windows("center", (8, 8), 4)
    # The whole image: every window is the image itself.
    assert set(tta.crop_windows("five_crop", (8, 8), 0)) == {(0, 0, False)}


def test_crops_are_the_right_pixel_windows():
    x = np.arange(2 * H * W * C, dtype="float32").reshape(2, H, W, C)
    windows = tta.crop_windows("ten_crop", (H, W), (CROP, 5))
    views = tta.crops(x, windows, (CROP, 5)).numpy()
    assert views.shape == (10, 2, CROP, 5, C)
    for view, c in zip(views, windows):
        want = x[:, c.top:c.top + CROP, c.left:c.left + 5, :]
        np.testing.assert_array_equal(view, want[:, :, ::-1, :] if c.flip else want)


@pytest.mark.parametrize("mode", list(tta.MODES))
def test_every_mode_keeps_the_number_of_predictions(mode):
    model = _conv()
    probs = tta.predict(model, _images(), mode, grid=2)
    assert probs.shape == (N, K) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, atol=1e-5)
    assert np.all(probs >= 0)


def test_center_with_full_size_crop_equals_plain_predict():
    model = _conv(size=H)
    x = _images()
    want = _softmax(model.predict(x, verbose=0))
    np.testing.assert_allclose(tta.predict(model, x, "center"), want, atol=1e-6)
    np.testing.assert_allclose(tta.predict(model, x, "none"), want, atol=1e-6)
    # five_crop of the whole image is the image five times.
    np.testing.assert_allclose(tta.predict(model, x, "five_crop"), want, atol=1e-6)
    # ten_crop of the whole image averages the image and its mirror.
    mirror = _softmax(model.predict(x[:, :, ::-1, :], verbose=0))
    np.testing.assert_allclose(tta.predict(model, x, "ten_crop"), (want + mirror) / 2,
                               atol=1e-6)


def test_center_mode_is_the_center_crop():
    model = _conv()
    x = _images()
    want = _softmax(model.predict(x[:, 1:1 + CROP, 1:1 + CROP, :], verbose=0))
    np.testing.assert_allclose(tta.predict(model, x, "center"), want, atol=1e-6)


def test_ten_crop_equals_five_crop_for_a_flip_invariant_model():
    model = _mean_model()
    x = _images()
    five = tta.predict(model, x, "five_crop")
    np.testing.assert_allclose(tta.predict(model, x, "ten_crop"), five, atol=1e-6)
    # ...but not for a model that sees positions, nor equal to the center crop.
    conv = _conv()
    assert not np.allclose(tta.predict(conv, x, "ten_crop"), tta.predict(conv, x, "five_crop"))
    assert not np.allclose(five, tta.predict(model, x, "center"))


def test_five_crop_is_the_mean_of_the_five_windows():
    model = _conv()
    x = _images()
    want = np.mean([_softmax(model.predict(x[:, t:t + CROP, s:s + CROP, :], verbose=0))
                    for t, s in [(0, 0), (0, 2), (2, 0), (2, 2), (1, 1)]], axis=0)
    np.testing.assert_allclose(tta.predict(model, x, "five_crop"), want, atol=1e-6)


def test_grid_of_one_equals_center_and_batching_changes_nothing():
    model = _conv()
    x = _images(n=7)
    np.testing.assert_allclose(tta.predict(model, x, "grid", grid=1),
                               tta.predict(model, x, "center"), atol=1e-7)
    np.testing.assert_allclose(tta.predict(model, x, "ten_crop", batch_size=3),
                               tta.predict(model, x, "ten_crop"), atol=1e-6)


def test_explicit_crop_size_for_a_model_of_any_size():
    inputs = keras.Input((None, None, C))
    h = keras.layers.GlobalAveragePooling2D()(inputs)
    model = keras.Model(inputs, keras.layers.Dense(K)(h))
    x = _images()
    # No fixed input size: the default crop is the whole image.
    np.testing.assert_allclose(tta.predict(model, x, "center"),
                               _softmax(model.predict(x, verbose=0)), atol=1e-6)
    want = _softmax(model.predict(x[:, 2:6, 2:6, :], verbose=0))
    np.testing.assert_allclose(tta.predict(model, x, "center", crop_size=4), want, atol=1e-6)


@pytest.mark.parametrize("kwargs, field", [
    ({"mode": "twelve_crop"}, "evaluate.tta"),
    ({"mode": "grid", "grid": 0}, "evaluate.grid"),
    ({"mode": "grid", "grid": 2.5}, "evaluate.grid"),
    ({"mode": "center", "crop_size": 9}, "augment.crop_size"),
    ({"mode": "center", "batch_size": 0}, "batch_size"),
])
def test_bad_inputs_raise(kwargs, field):
    with pytest.raises(ValueError, match=field):
        tta.predict(_conv(), _images(), **kwargs)


def test_crop_larger_than_image_from_the_model_input():
    with pytest.raises(ValueError, match="augment.crop_size"):
        tta.predict(_conv(size=10), _images(), "center")


def test_evaluate_scores():
    model = _conv()
    x = _images()
    probs = tta.predict(model, x, "ten_crop")
    y = np.array([0, 1, 2, 3, 0, 1])
    got = tta.evaluate(model, x, y, "ten_crop")
    assert got["accuracy"] == pytest.approx(np.mean(probs.argmax(-1) == y))
    assert got["loss"] == pytest.approx(-np.mean(np.log(probs[np.arange(N), y])), rel=1e-5)
    assert tta.evaluate(model, x, np.eye(K)[y], "ten_crop") == got  # one-hot labels too


def test_callback_writes_val_tta_metrics_during_fit():
    x = _images(n=16)
    y = np.random.default_rng(1).integers(0, K, 16)
    model = _conv()
    model.compile("sgd", keras.losses.CategoricalCrossentropy(from_logits=True),
                  metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")])
    cb = tta.CropAveragingEval(x, y, mode="ten_crop", every=2)
    history = model.fit(x[:, 1:7, 1:7, :], np.eye(K, dtype="float32")[y], epochs=3,
                        batch_size=8, verbose=0, callbacks=[cb])
    acc, loss = history.history["val_tta_accuracy"], history.history["val_tta_loss"]
    assert len(acc) == len(loss) == 3
    assert math.isnan(acc[0]) and math.isnan(loss[0])  # epoch 1: not an evaluation epoch
    assert not math.isnan(acc[1]) and not math.isnan(acc[2])  # epoch 2 and the last
    assert acc[2] == pytest.approx(tta.evaluate(model, x, y, "ten_crop")["accuracy"])
    assert loss[2] == pytest.approx(tta.evaluate(model, x, y, "ten_crop")["loss"], rel=1e-5)


def test_callback_checks_its_arguments():
    with pytest.raises(ValueError, match="evaluate.tta"):
        tta.CropAveragingEval(_images(), np.zeros(N), mode="bogus")
    with pytest.raises(ValueError, match="every"):
        tta.CropAveragingEval(_images(), np.zeros(N), every=0)
