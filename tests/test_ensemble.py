"""recipes.ensemble: averaging members, snapshot ensembles."""

import os

import keras
import numpy as np
import pytest

from recipes import ensemble

D, K, N = 5, 3, 12


def _mlp(classes=K, seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((D,))
    h = keras.layers.Dense(8, activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Dense(classes)(h))


def _copy(model):
    twin = keras.models.clone_model(model)
    twin.set_weights(model.get_weights())
    return twin


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _data(n=N):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, D)).astype("float32"), rng.integers(0, K, n)


def test_copies_of_one_model_equal_the_model():
    model = _mlp()
    x, _ = _data()
    want = _softmax(model.predict(x, verbose=0))
    got = ensemble.predict([model, _copy(model), _copy(model)], x)
    assert got.shape == (N, K)
    np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_allclose(ensemble.predict([model], x), want, atol=1e-6)


def test_average_of_different_members():
    a, b = _mlp(seed=1), _mlp(seed=2)
    x, y = _data()
    pa, pb = _softmax(a.predict(x, verbose=0)), _softmax(b.predict(x, verbose=0))
    got = ensemble.predict([a, b], x, batch_size=5)
    np.testing.assert_allclose(got, (pa + pb) / 2, atol=1e-6)
    np.testing.assert_allclose(got.sum(axis=-1), 1.0, atol=1e-5)
    assert not np.allclose(got, pa) and not np.allclose(got, pb)

    scores = ensemble.evaluate([a, b], x, y)
    assert scores["member_accuracy"] == pytest.approx(
        [np.mean(pa.argmax(-1) == y), np.mean(pb.argmax(-1) == y)])
    assert scores["accuracy"] == pytest.approx(np.mean(got.argmax(-1) == y))
    assert scores["loss"] == pytest.approx(-np.mean(np.log(got[np.arange(N), y])), rel=1e-5)
    assert len(scores["member_loss"]) == 2
    assert ensemble.evaluate([a, b], x, np.eye(K)[y]) == scores


def test_bad_members_raise():
    x, _ = _data()
    with pytest.raises(ValueError, match="at least one model"):
        ensemble.predict([], x)
    with pytest.raises(ValueError, match="number of classes"):
        ensemble.predict([_mlp(), _mlp(classes=K + 1)], x)
    with pytest.raises(ValueError, match="cycle_epochs"):
        ensemble.SnapshotSaver("unused", 0)


def test_snapshots_at_cycle_ends_reload(tmp_path):
    x, y = _data(32)
    model = _mlp()
    # Two equal cosine cycles of 2 epochs (4 steps each: 32 examples / batch 16 × 2 epochs).
    lr = keras.optimizers.schedules.CosineDecayRestarts(0.1, 4, t_mul=1.0, m_mul=1.0)
    model.compile(keras.optimizers.SGD(lr), keras.losses.CategoricalCrossentropy(from_logits=True))

    seen = {}

    class Spy(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            d = tmp_path / "snaps"
            seen[epoch] = sorted(os.listdir(d)) if d.exists() else []
            if epoch == 1:
                seen["pred_1"] = model.predict(x, verbose=0)

    saver = ensemble.SnapshotSaver(str(tmp_path / "snaps"), cycle_epochs=2)
    model.fit(x, np.eye(K, dtype="float32")[y], epochs=4, batch_size=16, verbose=0,
              callbacks=[saver, Spy()])
    assert seen[0] == [] and seen[1] == ["snapshot_1.keras"]
    assert seen[3] == ["snapshot_1.keras", "snapshot_2.keras"]  # no temp files left behind

    snaps = ensemble.load_snapshots(str(tmp_path / "snaps"))
    assert len(snaps) == 2
    np.testing.assert_allclose(snaps[0].predict(x, verbose=0), seen["pred_1"], atol=1e-6)
    np.testing.assert_allclose(snaps[1].predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-6)
    assert ensemble.predict(snaps, x).shape == (32, K)


def test_load_snapshots_of_an_empty_directory_raises(tmp_path):
    with pytest.raises(ValueError, match="SnapshotSaver"):
        ensemble.load_snapshots(str(tmp_path))
