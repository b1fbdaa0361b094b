"""Tests for recipes.preprocessing: train-only statistics, numpy/TF agreement, persistence."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from sklearn.decomposition import PCA

from recipes import preprocessing
from recipes.preprocessing import METHODS, Preprocessor


def _rgb(n=64, shape=(6, 6, 3), low=0, high=256, seed=0):
    return np.random.default_rng(seed).integers(low, high, (n, *shape), dtype=np.uint8)


def _correlated(n=3000, seed=0):
    """Digits-like 8x8x1 float data with strongly correlated, full-rank pixels."""
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(64, 64)) * np.linspace(1.0, 0.05, 64)
    return (rng.normal(size=(n, 64)) @ mixing.T + 0.5).reshape(n, 8, 8, 1).astype(np.float32)


def test_to_float_numpy_and_tf():
    x = np.array([[0, 51, 255]], dtype=np.uint8)
    out = preprocessing.to_float(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.0, 0.2, 1.0]], rtol=1e-6)
    f = np.array([0.25, 2.0], dtype=np.float64)
    assert preprocessing.to_float(f).dtype == np.float32
    np.testing.assert_array_equal(preprocessing.to_float(f), [0.25, 2.0])
    t = preprocessing.to_float(tf.constant(x))
    assert isinstance(t, tf.Tensor) and t.dtype == tf.float32
    np.testing.assert_allclose(t.numpy(), out)
    assert preprocessing.to_float(tf.constant([3], tf.int32)).numpy().tolist() == [3.0]


@pytest.mark.parametrize("method", ["mean_image", "per_channel_mean", "standardize", "zca"])
def test_statistics_come_from_train_only(method):
    train = _rgb(200, high=100, seed=1)  # mean ~0.19 in [0, 1]
    test = _rgb(50, low=150, seed=2)  # mean ~0.79: a different distribution
    pre = preprocessing.fit(train, method)
    assert abs(pre.transform(train).mean()) < 1e-3
    # Fitted on train only, so the shifted test set keeps a clearly non-zero mean. A fit that
    # leaked the test set (or refit on it) would center it at ~0.
    out = pre.transform(test)
    assert out.mean() > 0.3
    tr, te = train / 255.0, test / 255.0
    expected = {  # the formulas with train-only statistics; a leaky fit gives other numbers
        "mean_image": te - tr.mean(axis=0),
        "per_channel_mean": te - tr.mean(axis=(0, 1, 2)),
        "standardize": (te - tr.mean(axis=(0, 1, 2))) / tr.std(axis=(0, 1, 2)),
    }
    if method in expected:
        np.testing.assert_allclose(out, expected[method], rtol=1e-4, atol=1e-4)


def test_standardize_per_channel_mean_zero_std_one():
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(300, 5, 5, 3)) * [0.1, 0.2, 0.05] + [0.2, 0.5, 0.8]).astype("float32")
    out = preprocessing.fit(x, "standardize").transform(x)
    np.testing.assert_allclose(out.mean(axis=(0, 1, 2)), 0.0, atol=1e-4)
    np.testing.assert_allclose(out.std(axis=(0, 1, 2)), 1.0, atol=1e-3)


def test_mean_image_per_pixel_and_per_channel_mean():
    x = _rgb(100)
    out = preprocessing.fit(x, "mean_image").transform(x)
    np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-5)
    pre = preprocessing.fit(x, "per_channel_mean")
    assert pre.params["mean"].shape == (3,)
    np.testing.assert_allclose(pre.transform(x).mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(pre.params["mean"], (x / 255.0).mean(axis=(0, 1, 2)), atol=1e-5)


def test_zca_whitened_train_covariance_is_identity():
    x = _correlated()
    before = np.cov(x.reshape(len(x), -1), rowvar=False, bias=True)
    assert np.abs(before - np.diag(np.diag(before))).max() > 0.1  # really correlated
    pre = preprocessing.fit(x, "zca", zca_epsilon=1e-6)
    out = pre.transform(x)
    assert out.shape == x.shape
    cov = np.cov(out.reshape(len(out), -1), rowvar=False, bias=True)
    np.testing.assert_allclose(cov, np.eye(64), atol=2e-3)
    w = pre.params["whitening"]
    np.testing.assert_allclose(w, w.T, atol=1e-4)  # ZCA (unlike PCA whitening) is symmetric


def test_zca_epsilon_shrinks_whitening():
    x = _correlated(500)
    weak = preprocessing.fit(x, "zca", zca_epsilon=1.0).transform(x)
    strong = preprocessing.fit(x, "zca", zca_epsilon=1e-6).transform(x)
    # Whitened variances are S / (S + eps): ~1 for a tiny eps, < 1 where eps is not tiny.
    assert abs(strong.reshape(len(x), -1).var(0).mean() - 1.0) < 0.01
    assert weak.reshape(len(x), -1).var(0).mean() < 0.9


@pytest.mark.parametrize("fraction", [0.5, 0.9, 0.99])
def test_pca_variance_fraction_matches_sklearn(fraction):
    x = _correlated(1000)
    pre = preprocessing.fit(x, "pca", pca_components=fraction)
    ref = PCA(n_components=fraction, svd_solver="full").fit(x.reshape(len(x), -1))
    k = pre.output_shape[0]
    assert ref.explained_variance_ratio_[:k].sum() >= fraction
    assert pre.params["explained_variance_ratio"].sum() >= fraction - 1e-6
    assert abs(k - ref.n_components_) <= 1
    out = pre.transform(x)
    assert out.shape == (len(x), k)
    expected = ref.transform(x.reshape(len(x), -1))[:, : min(k, ref.n_components_)]
    # Same subspace and values, up to the sign of each component.
    np.testing.assert_allclose(np.abs(out[:, : expected.shape[1]]), np.abs(expected), atol=1e-3)


def test_pca_int_components():
    x = _correlated(300)
    pre = preprocessing.fit(x, "pca", pca_components=7)
    assert pre.output_shape == (7,)
    assert pre.transform(x[:5]).shape == (5, 7)
    variances = pre.transform(x).var(axis=0)
    assert np.all(np.diff(variances) <= 1e-6)  # sorted by decreasing variance
    # An integral float above 1 is what ConfigDict makes of --config...pca_components=7.
    assert preprocessing.fit(x, "pca", pca_components=7.0).output_shape == (7,)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_numpy_and_tf_agree(method, dtype):
    x = _rgb(80, shape=(5, 5, 3))
    if dtype == "float32":
        x = x.astype("float32") / 255.0
    pre = preprocessing.fit(x, method, pca_components=0.9, zca_epsilon=1e-3)
    expected = pre.transform(x[:16])
    got = pre.apply(tf.constant(x[:16]))
    assert got.dtype == tf.float32
    assert tuple(got.shape) == (16, *pre.output_shape) == expected.shape
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(pre(x[:16]), expected)


@pytest.mark.parametrize("method", ["standardize", "pca"])
def test_apply_inside_several_tf_data_pipelines(method):
    x = _rgb(20)
    pre = preprocessing.fit(x, method)
    for _ in range(2):  # the second pipeline must not reuse tensors of the first's graph
        ds = tf.data.Dataset.from_tensor_slices(x).batch(10).map(pre.apply)
        got = np.concatenate([b.numpy() for b in ds])
        np.testing.assert_allclose(got, pre.transform(x), atol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_save_load_round_trip(method, tmp_path):
    x = _rgb(60, shape=(4, 4, 3))
    pre = preprocessing.fit(x, method, pca_components=5)
    pre.save(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["preprocessing.json", "preprocessing.npz"]
    meta = json.loads((tmp_path / "preprocessing.json").read_text())
    assert meta["method"] == method and meta["input_shape"] == [4, 4, 3]
    loaded = Preprocessor.load(tmp_path)
    assert loaded.method == method and loaded.output_shape == pre.output_shape
    assert loaded.params.keys() == pre.params.keys()
    np.testing.assert_array_equal(loaded.transform(x), pre.transform(x))
    np.testing.assert_array_equal(loaded.apply(x).numpy(), pre.apply(x).numpy())
    pre.save(tmp_path)  # overwriting in place works and leaves no temp files
    assert sorted(os.listdir(tmp_path)) == ["preprocessing.json", "preprocessing.npz"]


def _saved(tmp_path, method="standardize"):
    preprocessing.fit(_rgb(10), method).save(tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    "damage",
    ["no_json", "no_npz", "garbage_npz", "garbage_json", "truncated_npz", "other_npz", "bad_key"],
)
def test_load_rejects_missing_corrupt_or_mismatched_files(tmp_path, damage):
    d = _saved(tmp_path / "a")
    json_path, npz_path = d / "preprocessing.json", d / "preprocessing.npz"
    if damage == "no_json":
        json_path.unlink()
    elif damage == "no_npz":
        npz_path.unlink()
    elif damage == "garbage_npz":
        npz_path.write_bytes(b"not a zip file")
    elif damage == "garbage_json":
        json_path.write_text("{not json")
    elif damage == "truncated_npz":
        npz_path.write_bytes(npz_path.read_bytes()[:40])
    elif damage == "other_npz":  # arrays of another preprocessor
        other = _saved(tmp_path / "b", "zca")
        npz_path.write_bytes((other / "preprocessing.npz").read_bytes())
    elif damage == "bad_key":
        meta = json.loads(json_path.read_text())
        meta["method"] = "whiten"
        json_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="preprocess"):
        Preprocessor.load(d)


def test_load_rejects_pickled_arrays(tmp_path):
    d = _saved(tmp_path)
    np.savez(d / "preprocessing.npz", mean=np.array([{"a": 1}], dtype=object), variance=[1.0])
    with pytest.raises(ValueError, match="preprocessing.npz"):
        Preprocessor.load(d)


def test_unknown_method_lists_methods():
    with pytest.raises(ValueError, match="dataset.preprocess") as e:
        preprocessing.fit(_rgb(4), "whiten")
    assert all(m in str(e.value) for m in METHODS)


@pytest.mark.parametrize("bad", [0, -3, 0.0, 1.5, 2.5, 10_000, True, "all", None])
def test_bad_pca_components(bad):
    with pytest.raises(ValueError, match="dataset.pca_components"):
        preprocessing.fit(_rgb(10), "pca", pca_components=bad)


@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_bad_zca_epsilon(bad):
    with pytest.raises(ValueError, match="dataset.zca_epsilon"):
        preprocessing.fit(_rgb(10), "zca", zca_epsilon=bad)


def test_output_shape_for_crops():
    x = _rgb(20, shape=(8, 8, 3))
    for method in ("none", "per_channel_mean", "standardize"):
        pre = preprocessing.fit(x, method)
        assert pre.output_shape_for((6, 6, 3)) == (6, 6, 3)
        assert pre.transform(x[:, :6, :6]).shape == (20, 6, 6, 3)
        assert pre.apply(x[:, 1:7, 1:7]).shape == (20, 6, 6, 3)
    for method in ("mean_image", "pca", "zca"):
        pre = preprocessing.fit(x, method)
        with pytest.raises(ValueError, match="crop_size"):
            pre.output_shape_for((6, 6, 3))
        with pytest.raises(ValueError, match="per-pixel"):
            pre.transform(x[:, :6, :6])
    with pytest.raises(ValueError, match="channel"):
        preprocessing.fit(x, "standardize").transform(x[..., :1])


def test_fit_rejects_bad_input():
    with pytest.raises(ValueError, match="NHWC"):
        preprocessing.fit(np.zeros((4, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="at least 2"):
        preprocessing.fit(_rgb(1), "pca")
