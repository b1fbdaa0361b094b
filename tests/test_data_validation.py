"""Data validation happens before any file is written, and each message names the field and fix.

Each table row is one bad input: the exception must be a ``ValueError`` naming where the
problem is, and the message must blame the real cause (a bad label, not ``val_size``).
Tiny arrays only; tensorflow-datasets is never reached (``no_tfds``), so nothing downloads.
"""

import gzip
import re
import sys
import warnings

import numpy as np
import pytest

from recipes import data, preprocessing


@pytest.fixture(autouse=True)
def no_tfds(monkeypatch):
    """Fails any test that would fall through to tensorflow-datasets (network, slow)."""

    def reached(name, data_dir, how):
        raise AssertionError(f"tfds reached for {name} (data_dir={data_dir})")

    monkeypatch.setattr(data, "_from_tfds", reached)


def arrays(n_train=12, n_test=6, classes=3, shape=(4, 4), dtype=np.uint8):
    rng = np.random.default_rng(0)
    return {
        "x_train": rng.integers(0, 256, (n_train, *shape)).astype(dtype),
        "y_train": np.arange(n_train) % classes,
        "x_test": rng.integers(0, 256, (n_test, *shape)).astype(dtype),
        "y_test": np.arange(n_test) % classes,
    }


def load_npz(tmp_path, val_size=3, **changes):
    a = arrays()
    a.update(changes)
    path = tmp_path / "d.npz"
    np.savez(path, **a)
    return data.load(f"npz:{path}", val_size=val_size)


def toy_splits(**changes):
    """Hand-built Splits as a notebook user makes them: 3 classes of 4x4 gray images."""
    a = arrays(classes=3, dtype=np.float32)
    parts = {
        "train": data.Split(a["x_train"][..., None] / 255, a["y_train"]),
        "val": data.Split(a["x_test"][..., None] / 255, a["y_test"]),
        "test": data.Split(a["x_test"][..., None] / 255, a["y_test"]),
        "info": data.DatasetInfo("toy", 3, (4, 4, 1), ("a", "b", "c"), "test"),
    }
    parts.update(changes)
    return data.Splits(**parts)


# ---------------------------------------------------------------- 1. huge pixels


@pytest.mark.parametrize("value, dtype", [
    (1e30, np.float32), (1e30, np.float64), (-1e13, np.float64), (2**62, np.int64),
    (2**63, np.uint64),
])
def test_huge_pixels_are_refused_with_their_range_and_the_fix(value, dtype):
    x = np.zeros((6, 4, 4), dtype)
    x[0, 0, 0] = value
    with pytest.raises(ValueError, match=r"w: pixels range from min .* to max .*"
                       + np.dtype(dtype).name + r".*scale the inputs to \[0, 1\] or \[-1, 1\]"):
        data.validate_arrays(x, np.arange(6) % 2, where="w")


@pytest.mark.parametrize("value, dtype", [
    (1e12, np.float64), (-1e12, np.float32), (65535, np.uint16),  # 1e12: data.MAX_ABS_PIXEL
    (2**31 - 1, np.int32), (6e4, np.float16),
])
def test_large_but_safe_pixels_are_accepted(value, dtype):
    x = np.zeros((6, 4, 4), dtype)
    x[0, 0, 0] = value
    out, _ = data.validate_arrays(x, np.arange(6) % 2, where="w")
    assert out.shape == (6, 4, 4, 1)


def test_huge_pixels_in_an_npz_are_refused_before_the_split(tmp_path):
    x = np.zeros((12, 4, 4))
    x[0] = 1e30
    with pytest.raises(ValueError, match="x_train/y_train: pixels range from min 0 to max 1e"):
        load_npz(tmp_path, x_train=x)


@pytest.mark.parametrize("method, value, dtype, statistic", [
    ("standardize", 1e30, np.float32, "variance"),
    ("standardize", 3e38, np.float32, "mean"),
    ("mean_image", 3e38, np.float32, "mean"),
    ("per_channel_mean", 1e300, np.float64, "mean"),
    ("pca", 1e300, np.float64, "mean"),
    ("zca", 1e300, np.float64, "mean"),
])
def test_fit_refuses_non_finite_statistics_without_numpy_warnings(method, value, dtype,
                                                                  statistic):
    x = (np.random.default_rng(0).random((8, 3, 3, 2)) * value).astype(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no "overflow encountered" first
        with pytest.raises(ValueError, match=rf"dataset.preprocess='{method}': the fitted "
                           rf"{statistic} contains (NaN|inf) for training images ranging from "
                           r"min .* to max .*scale the inputs to \[0, 1\] or \[-1, 1\]"):
            preprocessing.fit(x, method)


def test_huge_pixels_stop_a_run_before_its_workdir_exists(tmp_path):
    from recipes import configs, train

    cfg = configs.get("digits_mlp:quick")
    cfg.train.epochs, cfg.train.verbose, cfg.monitor.tensorboard = 1, 0, False
    x = toy_splits().train.x.copy()
    x[3] = 1e30
    splits = toy_splits(train=data.Split(x, np.arange(12) % 3))
    with pytest.raises(ValueError, match="splits.train: pixels range from"):
        train.run(cfg, str(tmp_path / "w"), splits=splits)
    assert not (tmp_path / "w").exists()


# ---------------------------------------------------------------- 2. train vs test classes


def write_mnist(directory, y_train, y_test):
    directory.mkdir(parents=True, exist_ok=True)
    for (images, labels), y in zip(data.IDX_FILES.values(), (y_train, y_test)):
        y = np.asarray(y, np.uint8)
        for stem, magic, array in ((images, data.IDX_IMAGES, np.zeros((len(y), 28, 28))),
                                   (labels, data.IDX_LABELS, y)):
            dims = b"".join(int(d).to_bytes(4, "big") for d in array.shape)
            raw = magic.to_bytes(4, "big") + dims + np.asarray(array, np.uint8).tobytes()
            (directory / f"{stem}.gz").write_bytes(gzip.compress(raw))
    return directory


UNSEEN = "has classes that never occur in"


def test_npz_test_class_never_seen_in_training_is_an_error(tmp_path):
    with pytest.raises(ValueError, match=rf"y_test {UNSEEN} y_train: 5, 6, 7, 8, 9 \(y_train "
                       r"has 0, 1, 2, 3, 4\).*add training examples of them or drop them"):
        load_npz(tmp_path, y_train=np.arange(12) % 5, y_test=np.arange(6) + 4)


def test_named_dataset_test_class_never_seen_in_training_is_an_error(tmp_path):
    write_mnist(tmp_path, y_train=np.arange(20) % 5, y_test=np.arange(10))
    with pytest.raises(ValueError, match=rf"mnist test split {UNSEEN} train split: 5, 6, 7, 8, 9"):
        data.load("mnist", data_dir=str(tmp_path), val_size=5)


@pytest.mark.parametrize("split", ["val", "test"])
def test_user_splits_eval_class_never_seen_in_training_is_an_error(split):
    s = toy_splits()
    two = {k: data.Split(getattr(s, k).x, np.arange(len(getattr(s, k))) % 2)
           for k in ("train", "val", "test") if k != split}  # classes 0 and 1; `split` has 2
    with pytest.raises(ValueError, match=rf"splits.{split} {UNSEEN} splits.train: 2 "):
        data.validate_splits(toy_splits(**two))


def test_train_class_missing_from_test_only_warns(tmp_path):
    with pytest.warns(UserWarning, match="y_test lacks classes of y_train: 2; its accuracy"):
        s = load_npz(tmp_path, y_test=np.arange(6) % 2)
    assert s.info.num_classes == 3 and set(s.test.y) == {0, 1}
    one_class = np.zeros(6, int)  # a one-class test split is allowed too, with the warning
    with pytest.warns(UserWarning, match="lacks classes of y_train: 1, 2"):
        load_npz(tmp_path, y_test=one_class)
    with pytest.warns(UserWarning, match="splits.test lacks classes of splits.train: 2"):
        data.validate_splits(toy_splits(test=data.Split(toy_splits().test.x, np.arange(6) % 2)))


def test_named_dataset_class_missing_from_training_warns(tmp_path):
    write_mnist(tmp_path, y_train=np.arange(20) % 5, y_test=np.arange(10) % 5)
    with pytest.warns(UserWarning, match=r"mnist train split: 5 of the 10 classes never occur "
                      r"\(5, 6, 7, 8, 9\); the model's outputs for them are never trained"):
        s = data.load("mnist", data_dir=str(tmp_path), val_size=5)
    assert s.info.num_classes == 10


def test_every_class_present_gives_no_warning(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_npz(tmp_path)
        data.validate_splits(toy_splits())


# ---------------------------------------------------------------- 3. val_size from the config


@pytest.mark.parametrize("val_size, n_val", [
    (100.0, 100),  # what --config.dataset.val_size=100 gives: the field is a float
    (np.float32(100.0), 100),
    (100, 100),
    (0.5, 719),  # ceil(0.5 * 1437)
])
def test_val_size_whole_float_is_a_count(val_size, n_val):
    s = data.load("digits", val_size=val_size)
    assert len(s.val) == n_val and len(s.train) == 1437 - n_val


@pytest.mark.parametrize("val_size", [1.5, 0, 0.0, -3.0, float("nan"), float("inf"), "100"])
def test_bad_val_size_says_fraction_or_whole_number(val_size):
    with pytest.raises(ValueError, match=r"dataset.val_size=.*: expected a fraction in \(0, 1\) "
                       "or a whole number >= 1") as e:
        data.load("digits", val_size=val_size)
    assert "integer" not in str(e.value)


@pytest.mark.parametrize("val_size, needle", [
    (1.0, "needs at least one example of each of the 10 classes on both sides"),
    (1437.0, r"a count must be in \[1, 1437\)"),
], ids=["1.0", "1437.0"])
def test_val_size_count_too_small_or_too_large(val_size, needle):
    with pytest.raises(ValueError, match=f"dataset.val_size={val_size!r}: .*{needle}"):
        data.load("digits", val_size=val_size)


# ---------------------------------------------------------------- 4. data_dir


IDX_FILES = "train-images-idx3-ubyte"
DIR_CASES = [
    ("mnist", IDX_FILES), ("fashion_mnist", IDX_FILES),
    ("cifar10", "cifar-10-batches-bin"), ("cifar100", "cifar-100-python"),
]


@pytest.mark.parametrize("name, expected", DIR_CASES)
def test_data_dir_not_found(tmp_path, name, expected):
    missing = str(tmp_path / "nope")
    with pytest.raises(ValueError, match=f"dataset.data_dir='{re.escape(missing)}': directory "
                       "not found; "
                       f"give the directory holding .*{expected}.*or leave dataset.data_dir "
                       "empty"):
        data.load(name, data_dir=missing)


@pytest.mark.parametrize("name, expected", DIR_CASES)
def test_data_dir_is_a_file(tmp_path, name, expected):
    path = tmp_path / "archive.tar.gz"
    path.write_bytes(b"not a directory")
    with pytest.raises(ValueError, match=f"dataset.data_dir='{re.escape(str(path))}': is a file, "
                       "give the "
                       f"directory holding .*{expected}"):
        data.load(name, data_dir=path)


@pytest.mark.parametrize("name, expected", DIR_CASES)
def test_data_dir_without_the_files_names_them(tmp_path, name, expected):
    (tmp_path / "notes.txt").write_text("")
    with pytest.raises(ValueError, match=f"no {name} files there \\(it holds notes.txt\\).*"
                       f"{expected}"):
        data.load(name, data_dir=str(tmp_path))


def test_data_dir_with_part_of_the_files_names_the_missing_ones(tmp_path):
    write_mnist(tmp_path, np.arange(20) % 10, np.arange(10))
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(ValueError, match="no mnist files there.*it lacks t10k-labels-idx1-ubyte"):
        data.load("mnist", data_dir=tmp_path)
    sub = tmp_path / "cifar-10-batches-bin"
    sub.mkdir()
    for f in ("data_batch_1.bin", "data_batch_2.bin"):
        (sub / f).write_bytes(b"")
    with pytest.raises(ValueError, match="cifar-10-batches-bin lacks data_batch_3.bin, "
                       "data_batch_4.bin, data_batch_5.bin, test_batch.bin.*re-extract"):
        data.load("cifar10", data_dir=tmp_path)


def test_a_tfds_data_dir_still_goes_to_tfds(tmp_path):
    version = tmp_path / "cifar10" / "3.0.2"
    version.mkdir(parents=True)
    (version / "dataset_info.json").write_text("{}")
    where = re.escape(str(tmp_path))
    with pytest.raises(AssertionError, match=f"tfds reached for cifar10 .*{where}"):
        data.load("cifar10", data_dir=str(tmp_path))


@pytest.mark.parametrize("data_dir", [3, ["/tmp"]])
def test_data_dir_that_is_not_a_path(data_dir):
    with pytest.raises(ValueError, match="dataset.data_dir=.*: expected a directory path"):
        data.load("mnist", data_dir=data_dir)


def test_tfds_that_cannot_import_is_one_value_error(monkeypatch):
    monkeypatch.undo()  # the real _from_tfds, with an import that fails
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    with pytest.raises(ValueError, match="dataset.name='mnist': no local files and "
                       "tensorflow_datasets could not load it.*set dataset.data_dir to a "
                       "directory with train-images"):
        data.load("mnist")


# ---------------------------------------------------------------- 5. the real cause first


BIG = 1_000_000
CAUSE_CASES = [
    ("huge label in y_train", dict(y_train=np.where(np.arange(12) == 0, BIG, np.arange(12) % 3)),
     rf"y_train: label {BIG} implies {BIG + 1} classes .* only 4 occur.*np.unique"),
    ("huge label in y_test", dict(y_test=np.where(np.arange(6) == 0, BIG, np.arange(6) % 3)),
     rf"y_test: label {BIG} implies {BIG + 1} classes"),
    ("gap in the ids", dict(y_train=np.arange(12) % 3 * 2, y_test=np.arange(6) % 3 * 2),
     r"label 4 implies 5 classes 0..4, but only 3 occur in y_train and y_test \(0, 2, 4\)"),
    ("uint64 label past int64", dict(y_train=np.where(np.arange(12) == 0, 2**63 + 5,
                                                      np.arange(12) % 3).astype(np.uint64)),
     r"label 9223372036854775813 is too large for a class id"),
    ("float label 1e30", dict(y_train=np.where(np.arange(12) == 0, 1e30, np.arange(12) % 3)),
     "too large for a class id"),
    ("one example of a class", dict(y_train=np.r_[np.arange(11) % 2, 2]),
     r"dataset.val_size=3: class 2 has only 1 example .*add examples of it or drop it"),
]


@pytest.mark.parametrize("case, changes, needle", CAUSE_CASES, ids=[c[0] for c in CAUSE_CASES])
def test_the_message_blames_the_real_cause(tmp_path, case, changes, needle):
    with pytest.raises(ValueError, match=needle):
        load_npz(tmp_path, **changes)


@pytest.mark.parametrize("kwargs, needle", [
    (dict(seed=-1), r"dataset.seed=-1: expected an integer in \[0, 4294967296\)"),
    (dict(seed="0"), "dataset.seed='0'"),
    (dict(limit=3), r"dataset.limit=3: .*each of the 10 classes.*dataset.limit=0 \(all\) or >= 10"),
], ids=["seed=-1", "seed='0'", "limit=3"])
def test_seed_and_limit_are_blamed_not_val_size(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        data.load("digits", **kwargs)


def test_user_splits_huge_label_names_the_label_and_the_classes():
    s = toy_splits()
    y = np.where(np.arange(12) == 5, BIG, s.train.y)
    with pytest.raises(ValueError, match=rf"splits.train: label {BIG} is outside \[0, 3\); "
                       "expected ids 0..2 of the 3 classes"):
        data.validate_splits(toy_splits(train=data.Split(s.train.x, y)))


# ---------------------------------------------------------------- other bad arrays


NPZ_CASES = [
    ("0-d x_train", dict(x_train=np.array(3.0)), r"x_train/y_train: images have rank 0"),
    ("0-d y_test", dict(y_test=np.array(1)), r"x_test/y_test: labels have shape \(\)"),
    ("gray train, color test", dict(x_test=np.zeros((6, 4, 4, 3), np.uint8)),
     r"x_test images are \(4, 4, 3\) but x_train images are \(4, 4, 1\).*np.repeat"),
    ("different sizes", dict(x_test=np.zeros((6, 5, 4), np.uint8)),
     r"x_test images are \(5, 4, 1\) but x_train images are \(4, 4, 1\)"),
    ("uint8 train, float test", dict(x_test=np.zeros((6, 4, 4), np.float32)),
     "x_test has dtype float32 but x_train has uint8: uint8 pixels are scaled by 1/255"),
    ("string pixels", dict(x_train=np.full((12, 4, 4), "7")), "dtype <U1.*decode strings"),
    ("string labels", dict(y_train=np.array(list("abc") * 4)), "labels have dtype <U1"),
    ("bool pixels", dict(x_train=np.ones((12, 4, 4), bool)), r"dtype bool.*x.astype\('uint8'\)"),
    ("bool labels", dict(y_train=np.arange(12) % 2 == 0), "makes False/True the classes 0/1"),
    ("zero-width images", dict(x_train=np.zeros((12, 4, 0))), "zero-sized dimension"),
    ("labels but no images", dict(x_test=np.zeros((0, 4, 4), np.uint8)),
     "x_test/y_test: length mismatch: 0 images but 6 labels"),
    ("x_train (N,)", dict(x_train=np.zeros(12)), r"images have rank 1 \(shape \(12,\)\)"),
]


@pytest.mark.parametrize("case, changes, needle", NPZ_CASES, ids=[c[0] for c in NPZ_CASES])
def test_bad_npz_arrays_get_a_clear_value_error(tmp_path, case, changes, needle):
    with pytest.raises(ValueError, match=needle) as e:
        load_npz(tmp_path, **changes)
    assert f"npz:{tmp_path / 'd.npz'}" in str(e.value)


SPLITS_CASES = [
    ("not Splits", lambda s: (s.train, s.val, s.test, s.info),
     r"splits: expected recipes.data.Splits\(train, val, test, info\), got tuple"),
    ("color test", lambda s: {"test": data.Split(np.zeros((6, 4, 4, 3), np.float32), s.test.y)},
     r"splits.test images are \(4, 4, 3\) but splits.train images are \(4, 4, 1\)"),
    ("uint8 val", lambda s: {"val": data.Split(np.zeros((6, 4, 4, 1), np.uint8), s.val.y)},
     "splits.val has dtype uint8 but splits.train has float"),
    ("wrong input_shape",
     lambda s: {"info": data.DatasetInfo("toy", 3, (8, 8, 1), tuple("abc"), "t")},
     r"splits.info.input_shape=\(8, 8, 1\) but splits.train images are \(4, 4, 1\)"),
    ("no num_classes", lambda s: {"info": data.DatasetInfo("toy", None, (4, 4, 1), (), "t")},
     "splits.info.num_classes=None: expected an integer >= 2"),
    ("names vs classes", lambda s: {"info": data.DatasetInfo("toy", 3, (4, 4, 1), ("a", "b"), "t")},
     "splits.info.class_names has 2 names for num_classes=3"),
    ("y None", lambda s: {"val": data.Split(s.val.x, None)}, r"splits.val: labels have shape"),
    ("huge pixels", lambda s: {"test": data.Split(s.test.x * 1e20, s.test.y)},
     "splits.test: pixels range from min .* to max .*e\\+19 \\(float32\\)"),
]


@pytest.mark.parametrize("case, change, needle", SPLITS_CASES, ids=[c[0] for c in SPLITS_CASES])
def test_bad_user_splits_get_a_clear_value_error(case, change, needle):
    s = toy_splits()
    changed = change(s)
    with pytest.raises(ValueError, match=needle):
        data.validate_splits(toy_splits(**changed) if isinstance(changed, dict) else changed)


def test_empty_val_split_is_still_allowed():
    empty = data.Split(np.zeros((0, 4, 4, 1), np.float32), np.zeros(0, np.int64))
    s = data.validate_splits(toy_splits(val=empty))
    assert len(s.val) == 0 and len(s.train) == 12

