"""Lazy sources: folder:PATH, tfds:NAME (mocked), from_user's forms, and streaming end to end.

Folders are written by the tests from scikit-learn's digits (8x8, scaled to uint8 PNGs);
tensorflow-datasets runs under ``tfds.testing.mock_data``, so nothing downloads.
"""

import gc
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from sklearn.datasets import load_digits

from recipes import data, pipeline, preprocessing, sources
from recipes.configs import base

CLASSES = ("d0", "d1", "d2")  # sorted as the digits they hold


def _png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tf.io.encode_png(image).numpy())


def _digits(per_class: int, offset: int = 0) -> dict[str, list[np.ndarray]]:
    """``per_class`` 8x8x1 uint8 digits of each of 0, 1, 2 (skipping the first ``offset``)."""
    d = load_digits()
    images = (d.images * 255 / 16).round().astype(np.uint8)[..., None]
    return {name: list(images[d.target == c][offset:offset + per_class])
            for c, name in enumerate(CLASSES)}


def _write(root: Path, per_class: dict[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
    """Writes ``root/CLASS/NNN.png``; returns path -> image."""
    written = {}
    for name, images in per_class.items():
        for i, image in enumerate(images):
            _png(root / name / f"{i:03d}.png", image)
            written[str((root / name / f"{i:03d}.png").resolve())] = image
    return written


def _cfg(batch_size=8, **augment):
    c = base.get_config()
    c.train.batch_size = batch_size
    for k, v in augment.items():
        c.augment[k] = v
    return c


def _epoch(ds):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return np.concatenate(xs), np.concatenate(ys)


# ---------------------------------------------------------------- folder:PATH


def test_folder_flat_layout_carves_a_stratified_test_split(tmp_path):
    written = _write(tmp_path, _digits(20))
    s = data.load(f"folder:{tmp_path}", val_size=0.25, test_size=0.2, seed=3)
    assert s.info.class_names == CLASSES and s.info.num_classes == 3
    assert s.info.source == str(tmp_path.resolve()) and s.info.input_shape == (8, 8, 1)
    assert all(data.is_lazy(split.x) for split in (s.train, s.val, s.test))
    assert s.train.x.dtype == np.uint8 and s.train.x.shape == (len(s.train), 8, 8, 1)
    assert len(s.test) == 12 and np.bincount(s.test.y).tolist() == [4, 4, 4]  # 20%, stratified
    assert len(s.val) == 12 and np.bincount(s.val.y).tolist() == [4, 4, 4]
    counts = sum(np.bincount(split.y, minlength=3) for split in (s.train, s.val, s.test))
    assert counts.tolist() == [20, 20, 20]
    files = [f for split in (s.train, s.val, s.test) for f in split.x.files()]
    assert sorted(files) == sorted(written)  # every file exactly once
    for split in (s.train, s.test):  # pixels and labels as written
        images = split.x[:]
        for image, label, f in zip(images, split.y, split.x.files(), strict=True):
            np.testing.assert_array_equal(image, written[f])
            assert CLASSES[label] == Path(f).parent.name
    again = data.load(f"folder:{tmp_path}", val_size=0.25, seed=4)  # another val, same test
    assert list(again.test.x.files()) == list(s.test.x.files())


def test_folder_train_and_test_folders_are_the_splits(tmp_path):
    _write(tmp_path / "train", _digits(10))
    (tmp_path / "train" / "d0" / "._000.png").write_bytes(b"AppleDouble")  # hidden: ignored
    (tmp_path / "train" / "d1" / "notes.txt").write_text("not an image")
    test = _write(tmp_path / "test", _digits(3, offset=10))
    s = data.load(f"folder:{tmp_path}", val_size=3)
    assert s.info.class_names == CLASSES
    assert sorted(s.test.x.files()) == sorted(test) and len(s.test) == 9
    assert len(s.train) + len(s.val) == 30 and len(s.val) == 3
    np.testing.assert_array_equal(s.test.y, np.repeat([0, 1, 2], 3))


def test_folder_pipeline_streams_the_same_batches_as_arrays(tmp_path):
    """A lazy split and the same examples as an array give identical training batches."""
    _write(tmp_path, _digits(12))
    s = data.load(f"folder:{tmp_path}", val_size=0.2)
    cfg = _cfg(batch_size=8, flip="horizontal", noise_std=0.05)
    pre = preprocessing.fit(s.train.x, "standardize")
    seeds = pipeline.EpochSeed(), pipeline.EpochSeed()
    lazy = pipeline.make(s.train.x, s.train.y, cfg, training=True, num_classes=3,
                         preprocessor=pre, epoch_seed=seeds[0])
    eager = pipeline.make(s.train.x[:], s.train.y, cfg, training=True, num_classes=3,
                          preprocessor=pre, epoch_seed=seeds[1])
    for epoch in (0, 1):
        for seed in seeds:
            seed.set_epoch(epoch)
        (xa, ya), (xb, yb) = _epoch(lazy), _epoch(eager)
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
        assert xa.shape == (len(s.train), 8, 8, 1) and ya.shape == (len(s.train), 3)
    evaluation = pipeline.make(s.test.x, s.test.y, cfg, training=False, num_classes=3,
                               preprocessor=pre)
    x, y = _epoch(evaluation)
    np.testing.assert_allclose(x, pre.transform(s.test.x[:]), atol=1e-6)
    np.testing.assert_array_equal(y.argmax(1), s.test.y)


def test_folder_gray_and_rgb_mixed_names_a_file_of_each(tmp_path):
    _write(tmp_path, _digits(4))
    rgb = tmp_path / "d1" / "color.png"
    _png(rgb, np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match=rf"mixed \(.*d0/000.png is grayscale, {rgb} is "
                                         r"color\).*dataset.color_mode=rgb"):
        data.load(f"folder:{tmp_path}", val_size=3, test_size=3)
    s = data.load(f"folder:{tmp_path}", val_size=3, test_size=3, color_mode="rgb")
    assert s.info.input_shape == (8, 8, 3) and s.train.x[:2].shape == (2, 8, 8, 3)
    gray = data.load(f"folder:{tmp_path}", val_size=3, test_size=3, color_mode="grayscale")
    assert gray.info.input_shape == (8, 8, 1)


@pytest.mark.parametrize("damage, needle", [
    (lambda p: p.write_bytes(b"this is not an image at all"), "not a PNG, JPEG, BMP or GIF"),
    (lambda p: p.write_bytes(p.read_bytes()[:-30]), "truncated PNG"),
    (lambda p: p.write_bytes(b""), "empty"),
], ids=["garbage", "truncated", "empty"])
def test_folder_unreadable_file_is_named_when_listing(tmp_path, damage, needle):
    _write(tmp_path, _digits(4))
    bad = tmp_path / "d2" / "001.png"
    damage(bad)
    with pytest.raises(ValueError, match=rf"{bad}: .*{needle}"):
        data.load(f"folder:{tmp_path}", val_size=3, test_size=3)


def test_folder_file_that_fails_to_decode_is_named_when_read(tmp_path):
    """A sound header and end marker, a damaged body: named at the first read."""
    _write(tmp_path, _digits(4))
    bad = tmp_path / "d2" / "001.png"
    raw = bytearray(bad.read_bytes())
    raw[16:24] = b"\xff" * 8  # IHDR width and height: libpng refuses the header's CRC
    bad.write_bytes(bytes(raw))
    s = data.load(f"folder:{tmp_path}", val_size=3, test_size=3, image_size=(8, 8))
    split = next(sp for sp in (s.train, s.val, s.test) if str(bad) in sp.x.files())
    with pytest.raises(ValueError, match=rf"{bad}: cannot be decoded as an image"):
        preprocessing.fit(split.x, "standardize")  # a streamed pass
    with pytest.raises(ValueError, match=rf"{bad}: cannot be decoded as an image"):
        split.x[:]


def test_folder_sizes_must_agree_unless_image_size_is_set(tmp_path):
    _write(tmp_path, _digits(4))
    odd = tmp_path / "d1" / "big.png"
    _png(odd, np.full((10, 12, 1), 200, np.uint8))
    with pytest.raises(ValueError, match=rf"{odd} is 10x12 but .* is 8x8.*dataset.image_size"):
        data.load(f"folder:{tmp_path}", val_size=3, test_size=3)
    s = data.load(f"folder:{tmp_path}", val_size=3, test_size=3, image_size=(6, 5))
    assert s.info.input_shape == (6, 5, 1)
    x = np.concatenate([split.x[:] for split in (s.train, s.val, s.test)])
    assert x.dtype == np.uint8 and x.shape == (13, 6, 5, 1)  # resized images stay uint8


@pytest.mark.parametrize("make, needle", [
    (lambda p: p / "missing", "no such directory"),
    (lambda p: (p / "f.txt").write_text("x") and p / "f.txt", "is a file"),
    (lambda p: p, r"no class sub-folders \(it holds nothing\)"),
    (lambda p: _write(p, {"a": [np.zeros((8, 8, 1), np.uint8)] * 3}) and (p / "b").mkdir()
     or p, "holds no images"),
    (lambda p: (p / "loose.png").write_bytes(b"x") and p, "holds 1 images but no sub-folders"),
    (lambda p: _write(p / "train", _digits(3)) and p, "has train/ but no test/"),
    (lambda p: _write(p / "train", _digits(3)) and _write(p / "test", {"d0": _digits(1)["d0"]})
     and p, r"same class folders; only in train/: \['d1', 'd2'\]"),
], ids=["missing", "file", "empty", "empty class", "loose images", "train only", "classes"])
def test_folder_bad_layouts_are_clear_value_errors(tmp_path, make, needle):
    path = make(tmp_path)
    with pytest.raises(ValueError, match=needle) as e:
        data.load(f"folder:{path}")
    assert "folder:" in str(e.value)


@pytest.mark.parametrize("kwargs, needle", [
    (dict(image_size=(8,)), "dataset.image_size"), (dict(image_size=(0, 8)), "dataset.image_size"),
    (dict(color_mode="rgba"), "dataset.color_mode"), (dict(test_size=0), "dataset.test_size"),
])
def test_folder_bad_options_name_the_field(tmp_path, kwargs, needle):
    _write(tmp_path, _digits(4))
    with pytest.raises(ValueError, match=needle):
        data.load(f"folder:{tmp_path}", val_size=3, **kwargs)


# ---------------------------------------------------------------- lazy Images


def test_stream_images_index_subset_and_order(tmp_path):
    x_all = np.arange(20 * 3, dtype=np.float32).reshape(20, 3)
    ds = tf.data.Dataset.from_tensor_slices((x_all, np.arange(20) % 2))
    x, y = sources.from_dataset(ds, "test")
    assert isinstance(x, sources.StreamImages) and not x.random_access
    assert x.shape == (20, 3) and x.dtype == np.float32 and x.ndim == 2 and len(x) == 20
    np.testing.assert_array_equal(y, np.arange(20) % 2)
    np.testing.assert_array_equal(x[[7, 2, 7]], x_all[[7, 2, 7]])
    np.testing.assert_array_equal(x[-1], x_all[-1])
    view = x.subset([1, 4, 9])
    np.testing.assert_array_equal(view[:], x_all[[1, 4, 9]])
    np.testing.assert_array_equal(np.stack(list(view.dataset().as_numpy_iterator())),
                                  x_all[[1, 4, 9]])
    np.testing.assert_array_equal(np.concatenate(list(x.batches(6))), x_all)
    with pytest.raises(ValueError, match="cannot be read in another order"):
        x.dataset(order=[1, 0])
    with pytest.raises(ValueError, match="strictly increasing"):
        x.subset([3, 1])
    with pytest.raises(IndexError):
        x[20]
    with pytest.raises(TypeError, match="np.asarray would load every example"):
        np.asarray(x)


def test_file_images_read_in_any_order(tmp_path):
    written = _write(tmp_path, _digits(3))
    x = sources.FileImages(sorted(written), (8, 8), 1)
    expected = np.stack([written[f] for f in sorted(written)])
    np.testing.assert_array_equal(x[[5, 0]], expected[[5, 0]])
    np.testing.assert_array_equal(x.subset([8, 1])[:], expected[[8, 1]])
    ordered = x.dataset(order=tf.constant([4, 2], tf.int64))
    np.testing.assert_array_equal(np.stack(list(ordered.as_numpy_iterator())), expected[[4, 2]])
    assert "lazy" in repr(x) and x.nbytes == 9 * 64


# ---------------------------------------------------------------- tfds:NAME


def test_tfds_image_dataset_is_streamed():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=100, policy=tfds.testing.MockPolicy.USE_CODE):
        s = data.load("tfds:mnist", val_size=10, seed=1)
        assert isinstance(s.train.x, sources.StreamImages) and s.info.source == "tfds:mnist"
        assert s.info.num_classes == 10 and s.info.class_names == tuple("0123456789")
        assert s.info.input_shape == (28, 28, 1) and s.train.x.dtype == np.uint8
        assert len(s.train) == 90 and len(s.val) == 10 and len(s.test) == 100
        cfg = _cfg(batch_size=10)
        pre = preprocessing.fit(s.train.x, "standardize")
        ds = pipeline.make(s.train.x, s.train.y, cfg, training=True, num_classes=10,
                           preprocessor=pre, label_form="sparse")
        x, y = _epoch(ds)
        assert x.shape == (90, 28, 28, 1) and y.dtype == np.int32
        assert sorted(y.tolist()) == sorted(s.train.y.tolist())  # shuffled, all there
        ev = _epoch(pipeline.make(s.val.x, s.val.y, cfg, training=False, num_classes=10,
                                  preprocessor=pre))
        np.testing.assert_allclose(ev[0], pre.transform(s.val.x[:]), atol=1e-5)
        one = data.load("tfds:mnist:train", val_size=10, test_size=0.25, image_size=(10, 10),
                        color_mode="rgb")
        assert len(one.test) == 25 and one.info.input_shape == (10, 10, 3)
        assert one.train.x[:2].shape == (2, 10, 10, 3)


@pytest.mark.parametrize("name, needle", [
    ("tfds:imdb_reviews", r"the input 'text' is Text.*supported: an image .* or 1-D numeric "
                          "vector"),
    ("tfds:no_such_dataset_xyz", "cannot open 'no_such_dataset_xyz'"),
    ("tfds:mnist:train:test:validation", r"expected tfds:NAME\[/CONFIG\]"),
])
def test_tfds_refusals_are_clear(name, needle):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=4, policy=tfds.testing.MockPolicy.USE_CODE):
        with pytest.raises(ValueError, match=needle):
            data.load(name)


# ---------------------------------------------------------------- from_user


def _images(n=60, seed=0):
    return np.random.default_rng(seed).random((n, 6, 6, 3), dtype=np.float32)


def test_from_user_arrays_two_and_four_tuples():
    x, y = _images(60), np.arange(60) % 3
    s = data.from_user((x, y), val_size=6, seed=0, test_size=0.2)
    assert len(s.test) == 12 and len(s.val) == 6 and len(s.train) == 42
    assert np.bincount(s.test.y).tolist() == [4, 4, 4] and s.info.input_shape == (6, 6, 3)
    assert s.info.source == "user arrays" and not s.info.multilabel
    s4 = data.from_user((x[:40], y[:40], x[40:], y[40:]), val_size=0.25, seed=0, limit=12)
    assert len(s4.test) == 20 and len(s4.val) == 10 and len(s4.train) == 12
    np.testing.assert_array_equal(s4.test.x, x[40:])
    gray = data.from_user((np.zeros((30, 5, 5), np.uint8), np.arange(30) % 2), val_size=3)
    assert gray.train.x.dtype == np.uint8 and gray.info.input_shape == (5, 5, 1)


def test_from_user_vectors_one_hot_binary_and_multilabel():
    rng = np.random.default_rng(0)
    vectors = rng.random((50, 7))
    s = data.from_user((vectors, np.eye(4)[np.arange(50) % 4]), val_size=0.1, seed=0)
    assert s.info.input_shape == (7,) and s.info.num_classes == 4
    assert s.train.y.dtype == np.int64 and s.train.x.dtype == np.float32
    binary = data.from_user((vectors, np.arange(50) % 2), val_size=0.1)
    assert binary.info.num_classes == 2 and set(binary.train.y) == {0, 1}
    labels = np.stack([np.arange(50) % 2, np.arange(50) % 3 == 0, np.ones(50)], 1)
    multi = data.from_user((vectors, labels.astype(int)), val_size=0.1, seed=0)
    assert multi.info.multilabel and multi.info.num_classes == 3
    assert multi.train.y.dtype == np.float32 and multi.train.y.shape[1] == 3
    assert len(multi.train) + len(multi.val) + len(multi.test) == 50
    assert set(np.unique(multi.test.y)) <= {0.0, 1.0}


@pytest.mark.parametrize("labels, needle", [
    (np.linspace(0, 1, 40), r"non-integer values \(e.g. 0.02564\): regression .* not supported"),
    (np.random.default_rng(0).random((40, 3)), "regression"),
    (np.full((40, 3), 2), "values other than 0 and 1"),
])
def test_from_user_continuous_targets_are_refused(labels, needle):
    with pytest.raises(ValueError, match=needle) as e:
        data.from_user((_images(40), labels), val_size=4)
    assert "one-hot (N, C)" in str(e.value) or "0 and 1" in str(e.value)


@pytest.mark.parametrize("batched", [False, True])
def test_from_user_tf_data_pair(batched):
    x, y = _images(40), np.arange(40) % 4
    train = tf.data.Dataset.from_tensor_slices((x[:30], y[:30]))
    test = tf.data.Dataset.from_tensor_slices((x[30:], np.eye(4)[y[30:]]))  # one-hot
    if batched:
        train, test = train.batch(7), test.batch(3)
    s = data.from_user((train, test), val_size=4, seed=0)
    assert s.info.source == "user tf.data" and s.info.input_shape == (6, 6, 3)
    assert data.is_lazy(s.train.x) and len(s.train) == 26 and len(s.test) == 10
    np.testing.assert_array_equal(s.test.y, y[30:])
    np.testing.assert_array_equal(s.test.x[:], x[30:])
    kept = np.sort(np.concatenate([s.train.y, s.val.y]))
    np.testing.assert_array_equal(kept, np.sort(y[:30]))
    for split in (s.train, s.val):  # each view's examples match its labels
        rows = [int(np.flatnonzero((x == image).all(axis=(1, 2, 3)))[0])
                for image in split.x[:]]
        np.testing.assert_array_equal(y[rows], split.y)


def test_from_user_ids_must_be_0_to_c_minus_1_unless_one_hot():
    with pytest.raises(ValueError, match=r"data y_train: label 2 implies 3 classes 0..2, but "
                                         r"only 2 occur .*np.unique"):
        data.from_user((_images(20), np.arange(20) % 2 + 1), val_size=2)
    rare = np.eye(4)[np.arange(40) % 3]  # column 3 never set: 4 classes, one unseen (warns)
    with pytest.warns(UserWarning, match="1 of the 4 classes never occur"):
        s = data.from_user((_images(40), rare), val_size=3)
    assert s.info.num_classes == 4


def test_from_user_splits_and_bad_forms():
    s = data.from_user((_images(30), np.arange(30) % 3), val_size=3)
    assert data.from_user(s).info == s.info  # Splits go through validate_splits
    with pytest.raises(ValueError, match="expected .*tf.data.Dataset.*got a dict"):
        data.from_user({"x": 1})
    ds = tf.data.Dataset.from_tensor_slices((_images(4), np.arange(4)))
    with pytest.raises(ValueError, match="come as a pair"):
        data.from_user((_images(4), ds))


# ---------------------------------------------------------------- pipeline label forms


@pytest.mark.parametrize("lazy", [False, True], ids=["array", "lazy"])
@pytest.mark.parametrize("label_form", pipeline.LABEL_FORMS)
def test_label_forms(label_form, lazy):
    x, y = _images(12), np.arange(12) % 2
    if label_form == "multilabel":
        y = np.stack([y, 1 - y, np.ones(12)], 1).astype(np.float32)
    c = 3 if label_form == "multilabel" else 2
    if lazy:
        x, _ = sources.from_dataset(tf.data.Dataset.from_tensor_slices((x, np.zeros(12))), "t")
    ds = pipeline.make(x, y, _cfg(batch_size=4), training=False, num_classes=c,
                       label_form=label_form)
    _, targets = _epoch(ds)
    expected = {"onehot": np.eye(2)[y] if label_form == "onehot" else None, "sparse": y,
                "binary": y[:, None] if label_form == "binary" else None, "multilabel": y}
    np.testing.assert_array_equal(targets, expected[label_form])
    assert targets.dtype == (np.int32 if label_form == "sparse" else np.float32)


def test_sparse_labels_refuse_mixing_and_binary_needs_two_classes():
    x, y = _images(8), np.arange(8) % 2
    for field in ("mixup", "cutmix"):
        with pytest.raises(ValueError, match=rf"augment.{field}=.*label_form='sparse'.*"
                                             rf"augment.{field}=0"):
            pipeline.make(x, y, _cfg(batch_size=4, **{field: 0.2}), training=True,
                          num_classes=2, label_form="sparse")
    with pytest.raises(ValueError, match="needs 2 classes"):
        pipeline.make(x, y, _cfg(batch_size=4), training=True, num_classes=3,
                      label_form="binary")
    with pytest.raises(ValueError, match="label_form='dense' is unknown"):
        pipeline.make(x, y, _cfg(batch_size=4), training=True, num_classes=2,
                      label_form="dense")


# ---------------------------------------------------------------- vectors


@pytest.mark.parametrize("field, value", [("crop_padding", 2), ("flip", "horizontal"),
                                          ("rotation", 0.1), ("mixup", 0.2)])
def test_vectors_refuse_image_augmentation(field, value):
    x, y = np.random.default_rng(0).random((8, 5)), np.arange(8) % 2
    with pytest.raises(ValueError, match=rf"augment.{field}=.*needs images"):
        pipeline.make(x, y, _cfg(batch_size=4, **{field: value}), training=True, num_classes=2)
    noisy = pipeline.make(x, y, _cfg(batch_size=4, noise_std=0.1), training=True, num_classes=2)
    assert _epoch(noisy)[0].shape == (8, 5)


@pytest.mark.parametrize("method", preprocessing.METHODS)
def test_vectors_every_preprocessing_method(method):
    rng = np.random.default_rng(0)
    x = (rng.random((40, 6)) * [1, 2, 3, 4, 5, 6]).astype(np.float32)
    pre = preprocessing.fit(x, method, pca_components=3)
    out = pre.transform(x)
    assert out.shape == ((40, 3) if method == "pca" else (40, 6))
    np.testing.assert_allclose(pre.apply(x).numpy(), out, atol=1e-5)
    ds = pipeline.make(x, np.arange(40) % 2, _cfg(batch_size=8), training=False,
                       num_classes=2, preprocessor=pre)
    np.testing.assert_allclose(_epoch(ds)[0], out, atol=1e-5)
    if method in ("standardize", "per_channel_mean", "mean_image"):
        np.testing.assert_allclose(out.mean(axis=0), 0, atol=1e-5)  # per feature
    assert pipeline.output_shape(_cfg(), (6,), pre) == out.shape[1:]


# ---------------------------------------------------------------- streamed statistics


@pytest.mark.parametrize("method", ["standardize", "per_channel_mean", "mean_image", "pca"])
def test_lazy_fit_equals_array_fit(tmp_path, method):
    _write(tmp_path, _digits(10))
    x = data.load(f"folder:{tmp_path}", val_size=3, test_size=3).train.x
    lazy, eager = (preprocessing.fit(v, method, pca_components=5) for v in (x, x[:]))
    for key, value in eager.params.items():
        np.testing.assert_allclose(lazy.params[key], value, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="lazy examples.*recipes.pipeline.make"):
        lazy.transform(x)
    np.testing.assert_allclose(lazy.transform(x[:4]), eager.transform(x[:4]), atol=1e-5)


def test_streamed_moments_are_float64_exact():
    rng = np.random.default_rng(0)
    x_all = (rng.random((300, 4, 4, 2)) * 1000 + 5000).astype(np.float32)
    x, _ = sources.from_dataset(tf.data.Dataset.from_tensor_slices((x_all, np.zeros(300))), "t")
    mean, var = preprocessing.streamed_moments(x, (0, 1, 2))
    f64 = x_all.astype(np.float64)
    np.testing.assert_allclose(mean, f64.mean(axis=(0, 1, 2)), rtol=1e-12)
    np.testing.assert_allclose(var, f64.var(axis=(0, 1, 2)), rtol=1e-9)


def test_a_generator_stream_is_never_materialised():
    """from_user + fit + a training epoch stay far below the split's size in traced memory.

    tracemalloc traces numpy's allocations (and Python's), not TensorFlow's buffers: what
    this proves is that no code of ours loads the split into an array. 3,000 float32
    32x32x3 examples are 37 MB.
    """
    n, shape = 3000, (32, 32, 3)

    def generate(count, seed):
        def gen():
            rng = np.random.default_rng(seed)
            for i in range(count):
                yield rng.random(shape, dtype=np.float32), i % 3
        return gen

    spec = (tf.TensorSpec(shape, tf.float32), tf.TensorSpec((), tf.int64))
    train = tf.data.Dataset.from_generator(generate(n, 0), output_signature=spec)
    test = tf.data.Dataset.from_generator(generate(60, 1), output_signature=spec)
    cfg = _cfg(batch_size=100, flip="horizontal")
    gc.collect()
    tracemalloc.start()
    try:
        s = data.from_user((train, test), val_size=0.1, seed=0)
        pre = preprocessing.fit(s.train.x, "standardize")
        ds = pipeline.make(s.train.x, s.train.y, cfg, training=True, num_classes=3,
                           preprocessor=pre, epoch_seed=pipeline.EpochSeed())
        seen = sum(len(labels) for _, labels in ds)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    split_bytes = len(s.train) * int(np.prod(shape)) * 4
    assert seen == len(s.train) == 2700
    assert peak < split_bytes / 5, (peak, split_bytes)
    np.testing.assert_allclose(pre.params["mean"], 0.5, atol=0.01)
