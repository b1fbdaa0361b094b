import json
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from recipes import configs, data, lr_range, sanity

INITIAL = 2.3


@pytest.mark.parametrize("curve, label", [
    (np.full(20, INITIAL), "too_low"),  # the lecture's 1e-6 run: nothing moves
    (INITIAL * (1 - 0.01 * np.linspace(0, 1, 20)), "too_low"),  # 1 % in the whole run
    (INITIAL * np.exp(-np.linspace(0, 2, 20)), "good"),
    (np.r_[np.linspace(INITIAL, 1.0, 10), [np.nan] * 3], "too_high"),  # NaN
    (INITIAL * np.linspace(1, 4, 20), "too_high"),  # > 3x the initial loss
    (INITIAL * np.linspace(1, 1.3, 20), "too_high"),  # rising, below 3x
])
def test_classify_synthetic_curves(curve, label):
    assert lr_range.classify(curve, INITIAL) == label


def test_classify_compares_with_the_reference_on_the_same_batches():
    rng = np.random.default_rng(0)
    reference = INITIAL + rng.normal(0, 0.3, 20)  # noisy batches of an untrained net
    flat = reference + 0.001
    assert lr_range.classify(flat, INITIAL, reference) == "too_low"
    assert lr_range.classify(reference * 0.8, INITIAL, reference) == "good"
    with pytest.raises(ValueError):
        lr_range.classify([], INITIAL)


def test_recommend_narrows_to_the_best_good_runs():
    lrs = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0]
    labels = ["too_low", "too_low", "good", "good", "good", "too_high", "too_high"]
    finals = [2.3, 2.3, 2.0, 0.9, 0.5, math.nan, math.inf]
    # 1e-4 made 0.3 of the best drop (1.8): below half, so dropped
    assert lr_range.recommend(lrs, labels, finals, 2.3) == (1e-3, 1e-2)
    assert lr_range.recommend(lrs, ["too_low"] * 7, finals, 2.3) is None
    # a single kept lr widens to its good neighbours
    assert lr_range.recommend(lrs[:5], labels[:5], [2.3, 2.3, 2.2, 2.1, 0.1], 2.3) == (
        1e-3, 1e-2)


def test_suggest_finds_the_steepest_descent():
    lrs = np.logspace(-7, 1, 81)
    loss = 2.3 - 2.0 / (1 + np.exp(-(np.log10(lrs) + 3) * 3))  # steepest at 1e-3
    loss[np.log10(lrs) > -1] += (np.log10(lrs[np.log10(lrs) > -1]) + 1) * 5
    s = lr_range.suggest(lrs, lr_range.smooth(loss, beta=0.0))
    assert s["steep"] == pytest.approx(1e-3, rel=0.3)
    assert s["minimum"] == pytest.approx(1e-1, rel=0.3)
    assert s["min_over_10"] == pytest.approx(s["minimum"] / 10)
    assert lr_range.smooth([1.0, 1.0, 1.0]).tolist() == pytest.approx([1.0, 1.0, 1.0])


def test_recorder_recovers_batch_losses_from_running_means():
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(40, 5)).astype("float32")
    y = keras.ops.one_hot(np.arange(40) % 3, 3)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
    model.compile(optimizer=keras.optimizers.SGD(1e-12), loss="categorical_crossentropy")
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    rec = lr_range.BatchLossRecorder()
    model.fit(ds, epochs=1, callbacks=[rec], verbose=0, shuffle=False)
    direct = [float(model.evaluate(bx, by, verbose=0)) for bx, by in ds]
    assert rec.losses == pytest.approx(direct, rel=1e-4)


@pytest.fixture(scope="module")
def digits_sgd():
    splits = data.load("digits")
    cfg = configs.get("digits_mlp")
    cfg.train.verbose = 0
    cfg.optimizer.name = "sgd"
    lrs = lr_range.default_lrs(cfg) + [1e6]
    return cfg, splits, lr_range.run(cfg, splits=splits, lrs=lrs)


def test_range_on_digits_with_sgd(digits_sgd, tmp_path):
    _, _, r = digits_sgd
    assert len(r.lrs) == 9 and r.steps == 21
    low, high = r.range
    assert 1e-5 <= low <= high <= 1.0
    assert r.labels[r.lrs.index(1e6)] == "too_high"
    assert r.labels[r.lrs.index(1e-6)] == "too_low"
    assert r.best_lr is not None and low <= r.best_lr <= high
    good = [v for v, c in zip(r.lrs, r.labels) if c == "good"]
    assert all(min(good) <= v <= max(good) for v in r.range)
    assert r.val_accuracies[r.lrs.index(r.best_lr)] > 0.5
    assert json.loads(json.dumps(r.to_dict()))["range"] == [low, high]
    path = lr_range.plot(r, str(tmp_path / "range.png"))
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_finder_suggests_within_a_decade_of_the_good_range(digits_sgd, tmp_path):
    cfg, splits, r = digits_sgd
    f = lr_range.find(cfg, splits=splits, start=1e-7, end=10, steps=100)
    assert 1e-7 <= f.suggestion <= 10
    assert r.range[0] / 10 <= f.suggestion <= r.range[1] * 10
    assert len(f.lrs) == len(f.losses) == len(f.smoothed) <= 100
    assert f.lrs[1] / f.lrs[0] == pytest.approx((10 / 1e-7) ** (1 / 99))
    json.dumps(f.to_dict())
    path = lr_range.plot(f, str(tmp_path / "finder.png"))
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_default_lrs_follow_the_babysit_branch():
    lrs = lr_range.default_lrs(sanity.configure(None))
    assert len(lrs) == 8 and lrs[0] == pytest.approx(1e-6) and lrs[-1] == pytest.approx(10)
    with pytest.raises(ValueError, match="lr_min"):
        lr_range.default_lrs({"babysit": {"lr_min": 1.0, "lr_max": 0.1}})
