"""recipes.data: splits, every source's format on tiny synthetic files, and the input checks."""

import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from recipes import data

FASHION = Path(data.FASHION_MNIST_DIR)


def rows(split):
    return {row.tobytes() for row in split.x}


# ---------------------------------------------------------------- digits and the splits


def test_digits_shapes_dtype_and_info():
    s = data.load("digits")
    assert s.train.x.dtype == np.float32 and s.train.x.shape[1:] == (8, 8, 1)
    assert 0.0 <= s.train.x.min() and s.train.x.max() <= 1.0 and s.train.x.max() == 1.0
    assert s.train.y.dtype == np.int64 and s.val.y.dtype == np.int64
    assert len(s.train) + len(s.val) + len(s.test) == 1797
    assert len(s.test) == 360  # 20% of 1797, rounded up by sklearn
    assert len(s.val) == 144  # 10% of the remaining 1437
    assert s.info == data.DatasetInfo(
        "digits", 10, (8, 8, 1), tuple("0123456789"), "sklearn.datasets.load_digits"
    )


def test_digits_splits_are_disjoint_and_stratified():
    s = data.load("digits", val_size=0.2)
    train, val, test = rows(s.train), rows(s.val), rows(s.test)  # digits has no duplicate images
    assert len(train) == len(s.train) and len(val) == len(s.val) and len(test) == len(s.test)
    assert not train & val and not train & test and not val & test
    p_train = np.bincount(s.train.y, minlength=10) / len(s.train)
    p_val = np.bincount(s.val.y, minlength=10) / len(s.val)
    np.testing.assert_allclose(p_val, p_train, atol=0.01)


def test_seeds_change_val_but_never_test():
    a, b, c = (data.load("digits", seed=seed) for seed in (0, 0, 1))
    np.testing.assert_array_equal(a.val.x, b.val.x)
    np.testing.assert_array_equal(a.train.y, b.train.y)
    assert rows(a.val) != rows(c.val)
    np.testing.assert_array_equal(a.test.x, c.test.x)
    np.testing.assert_array_equal(a.test.y, c.test.y)


def test_val_size_count_and_limit():
    s = data.load("digits", val_size=100, limit=50, seed=3)
    assert len(s.val) == 100 and len(s.train) == 50
    assert set(s.train.y) == set(range(10))  # a stratified subset keeps every class
    assert not rows(s.train) & rows(s.val)


@pytest.mark.parametrize("val_size", [0, 0.0, 1.0, 1.5, -0.1, True, "0.1", None, 1437, 5000])
def test_bad_val_size(val_size):
    with pytest.raises(ValueError, match="dataset.val_size"):
        data.load("digits", val_size=val_size)


@pytest.mark.parametrize("limit", [-1, 1.5, True, 3])  # 3 < 10 classes: no stratified subset
def test_bad_limit(limit):
    with pytest.raises(ValueError, match="dataset.limit"):
        data.load("digits", limit=limit)


@pytest.mark.parametrize("name", ["imagenet", "npz:", "Digits", 3])
def test_unknown_name_lists_valid_names(name):
    with pytest.raises(ValueError, match="valid names: digits, fashion_mnist, mnist, cifar10"):
        data.load(name)


# ---------------------------------------------------------------- IDX (MNIST, Fashion-MNIST)


@pytest.mark.skipif(
    not FASHION.is_dir(), reason=f"{FASHION} missing: apt-get install dataset-fashion-mnist"
)
def test_fashion_mnist_real_files():
    s = data.load("fashion_mnist")
    assert len(s.train) + len(s.val) == 60000 and len(s.val) == 6000 and len(s.test) == 10000
    for split in (s.train, s.val, s.test):
        assert split.x.dtype == np.uint8 and split.x.shape[1:] == (28, 28, 1)
        assert split.y.dtype == np.int64 and split.y.min() == 0 and split.y.max() == 9
    assert s.info.num_classes == 10 and s.info.input_shape == (28, 28, 1)
    assert s.info.class_names[0] == "T-shirt/top" and s.info.class_names[9] == "Ankle boot"
    assert s.info.source == str(FASHION)


def write_idx(path, array, magic=None, count=None, gz=True):
    array = np.asarray(array, np.uint8)
    if magic is None:
        magic = data.IDX_IMAGES if array.ndim == 3 else data.IDX_LABELS
    dims = (count if count is not None else len(array), *array.shape[1:])
    raw = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims) + array.tobytes()
    Path(path).write_bytes(gzip.compress(raw) if gz else raw)
    return Path(path)


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_good(tmp_path, gz):
    images = np.random.randint(0, 256, (5, 3, 4), dtype=np.uint8)
    path = write_idx(tmp_path / ("im.gz" if gz else "im"), images, gz=gz)
    out = data.read_idx(path, data.IDX_IMAGES)
    np.testing.assert_array_equal(out, images)
    assert out.flags.writeable
    labels = write_idx(tmp_path / "lb.gz", [1, 2, 3])
    np.testing.assert_array_equal(data.read_idx(labels), [1, 2, 3])


def test_read_idx_bad_files(tmp_path):
    images = np.zeros((5, 3, 4), np.uint8)
    good = write_idx(tmp_path / "good.gz", images).read_bytes()
    (tmp_path / "cut.gz").write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match="cut.gz.*truncated or corrupted"):
        data.read_idx(tmp_path / "cut.gz")
    (tmp_path / "notgz.gz").write_bytes(b"plain bytes, not gzip")
    with pytest.raises(ValueError, match="notgz.gz.*truncated or corrupted"):
        data.read_idx(tmp_path / "notgz.gz")
    write_idx(tmp_path / "magic.gz", images, magic=0x00000804)
    with pytest.raises(ValueError, match="magic.gz: wrong IDX magic number 0x00000804"):
        data.read_idx(tmp_path / "magic.gz")
    labels = write_idx(tmp_path / "labels.gz", [0, 1])
    with pytest.raises(ValueError, match="labels.gz: wrong IDX magic.*expected 0x00000803"):
        data.read_idx(labels, data.IDX_IMAGES)
    write_idx(tmp_path / "count.gz", images, count=6)
    with pytest.raises(ValueError, match=r"count.gz: header says shape \(6, 3, 4\)"):
        data.read_idx(tmp_path / "count.gz")


def write_mnist(directory, n_train=20, n_test=10, gz=True, n_test_labels=None):
    directory.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    arrays = {}
    for k, n, n_labels in (("train", n_train, n_train), ("test", n_test, n_test_labels or n_test)):
        x = np.random.randint(0, 256, (n, 28, 28), dtype=np.uint8)
        y = np.arange(n_labels) % 10
        image_stem, label_stem = data.IDX_FILES[k]
        write_idx(directory / (image_stem + suffix), x, gz=gz)
        write_idx(directory / (label_stem + suffix), y, gz=gz)
        arrays[k] = (x, y)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_from_data_dir(tmp_path, gz):
    arrays = write_mnist(tmp_path, gz=gz)
    s = data.load("mnist", data_dir=str(tmp_path), val_size=10)
    assert len(s.train) == 10 and len(s.val) == 10
    assert s.test.x.dtype == np.uint8 and s.test.x.shape == (10, 28, 28, 1)
    np.testing.assert_array_equal(s.test.x[..., 0], arrays["test"][0])
    np.testing.assert_array_equal(s.test.y, arrays["test"][1])
    assert s.info == data.DatasetInfo("mnist", 10, (28, 28, 1), tuple("0123456789"), str(tmp_path))


def test_idx_images_and_labels_count_mismatch(tmp_path):
    write_mnist(tmp_path, n_test=10, n_test_labels=9)
    with pytest.raises(ValueError, match="mnist test.*length mismatch: 10 images but 9 labels"):
        data.load("mnist", data_dir=tmp_path)


# ---------------------------------------------------------------- CIFAR official formats


def cifar_arrays(num_classes, seed, single_file):
    """Every class in each file; twice for a lone cifar-100 train file, so val can be split."""
    n = 2 * num_classes if single_file else 10
    x = np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    return x, np.arange(seed, seed + n) % num_classes


def write_cifar_bin(directory, name):
    """Writes the official binary layout; returns the (train, test) arrays written."""
    directory.mkdir(parents=True, exist_ok=True)
    c = 100 if name == "cifar100" else 10
    sub, train_files, test_files, meta = data._CIFAR_BIN[name]
    written = {}
    for k, files in (("train", train_files), ("test", test_files)):
        parts = []
        for i, f in enumerate(files):
            x, y = cifar_arrays(c, seed=i, single_file=k == "train" and len(files) == 1)
            labels = [np.array(y // 10, np.uint8)] if c == 100 else []  # coarse label first
            records = np.column_stack(
                labels + [y.astype(np.uint8), x.transpose(0, 3, 1, 2).reshape(len(x), -1)]
            )
            (directory / f).write_bytes(records.astype(np.uint8).tobytes())
            parts.append((x, y))
        written[k] = tuple(np.concatenate(a) for a in zip(*parts))
    (directory / meta).write_text("".join(f"class_{i}\n" for i in range(c)) + "\n")
    return written


def write_cifar_py(directory, name, payload=None):
    """Writes the official python layout (protocol-2 pickles, bytes keys)."""
    directory.mkdir(parents=True, exist_ok=True)
    c = 100 if name == "cifar100" else 10
    sub, train_files, test_files, meta = data._CIFAR_PY[name]
    written = {}
    for k, files in (("train", train_files), ("test", test_files)):
        parts = []
        for i, f in enumerate(files):
            x, y = cifar_arrays(c, seed=i, single_file=k == "train" and len(files) == 1)
            d = {b"batch_label": b"batch", b"data": x.transpose(0, 3, 1, 2).reshape(len(x), -1)}
            if c == 100:
                d.update({b"fine_labels": y.tolist(), b"coarse_labels": (y // 10).tolist()})
            else:
                d[b"labels"] = y.tolist()
            if payload is not None and i == 0:
                d[b"extra"] = payload
            (directory / f).write_bytes(pickle.dumps(d, protocol=2))
            parts.append((x, y))
        written[k] = tuple(np.concatenate(a) for a in zip(*parts))
    key = b"fine_label_names" if c == 100 else b"label_names"
    (directory / meta).write_bytes(pickle.dumps({key: [b"c%d" % i for i in range(c)]}, 2))
    return written


@pytest.mark.filterwarnings("ignore:cifar100 test split lacks classes")  # 10 test images
@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
@pytest.mark.parametrize("fmt", ["bin", "py"])
@pytest.mark.parametrize("in_subfolder", [False, True])
def test_cifar_official_formats(tmp_path, name, fmt, in_subfolder):
    writer, layout = (
        (write_cifar_bin, data._CIFAR_BIN) if fmt == "bin" else (write_cifar_py, data._CIFAR_PY)
    )
    directory = tmp_path / layout[name][0] if in_subfolder else tmp_path
    written = writer(directory, name)
    c = 100 if name == "cifar100" else 10
    s = data.load(name, data_dir=tmp_path, val_size=c)
    assert len(s.train) + len(s.val) == (50 if c == 10 else 200) and len(s.val) == c
    assert s.train.x.dtype == np.uint8 and s.train.x.shape[1:] == (32, 32, 3)
    assert set(s.val.y) == set(range(c))  # stratified
    assert s.info.num_classes == c and s.info.input_shape == (32, 32, 3)
    assert s.info.source == str(directory)
    assert s.info.class_names[3] == ("class_3" if fmt == "bin" else "c3")
    test = s.test
    np.testing.assert_array_equal(test.x, written["test"][0])  # exact HWC pixel layout
    np.testing.assert_array_equal(test.y, written["test"][1])  # fine label for cifar100
    assert test.y.dtype == np.int64


def test_cifar_truncated_binary(tmp_path):
    write_cifar_bin(tmp_path, "cifar10")
    raw = (tmp_path / "test_batch.bin").read_bytes()
    (tmp_path / "test_batch.bin").write_bytes(raw[:-5])
    with pytest.raises(ValueError, match="test_batch.bin.*not a whole number of 3073-byte"):
        data.load("cifar10", data_dir=tmp_path)


class Payload:
    """Pickles to a call of ``func(*args)``: what an attacker's altered batch would carry."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize("kind", ["os.system", "builtins.exec"])
def test_restricted_unpickler_refuses_code(tmp_path, kind):
    marker = tmp_path / "pwned"
    payload = (
        Payload(os.system, f"touch {marker}")
        if kind == "os.system"
        else Payload(exec, f"open({str(marker)!r}, 'w').close()")
    )
    write_cifar_py(tmp_path / "cifar-10-batches-py", "cifar10", payload=payload)
    with pytest.raises(ValueError, match="data_batch_1: not a CIFAR python file.*refusing"):
        data.load("cifar10", data_dir=tmp_path)
    assert not marker.exists()


def test_restricted_unpickler_refuses_non_dict(tmp_path):
    (tmp_path / "meta").write_bytes(pickle.dumps([1, 2], 2))
    with pytest.raises(ValueError, match="not a dict"):
        data.restricted_unpickle(tmp_path / "meta")


# ---------------------------------------------------------------- tensorflow_datasets


def test_cifar10_from_mocked_tfds():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=60, policy=tfds.testing.MockPolicy.USE_CODE):
        s = data.load("cifar10", val_size=20)
    assert len(s.train) == 40 and len(s.val) == 20 and len(s.test) == 60
    for split in (s.train, s.val, s.test):
        assert split.x.dtype == np.uint8 and split.x.shape[1:] == (32, 32, 3)
        assert split.y.dtype == np.int64 and 0 <= split.y.min() and split.y.max() < 10
    assert s.info.source == "tfds:cifar10" and s.info.num_classes == 10
    assert s.info.input_shape == (32, 32, 3)
    assert len(s.info.class_names) == 10  # the mock has no names: "0".."9"; a real run has them


@pytest.mark.parametrize(
    "name, hint",
    [
        ("cifar10", "cifar-10-batches-bin"),
        ("mnist", "t10k"),
        ("fashion_mnist", "apt-get install dataset-fashion-mnist"),
    ],
)
def test_tfds_failure_says_how_to_get_the_data(tmp_path, monkeypatch, name, hint):
    tfds = pytest.importorskip("tensorflow_datasets")

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(tfds, "load", offline)
    monkeypatch.setattr(data, "FASHION_MNIST_DIR", str(tmp_path / "not-installed"))
    with pytest.raises(ValueError, match=f"dataset.name='{name}'.*no network.*{hint}.*internet"):
        data.load(name)  # no data_dir and no local files: only then is tfds tried


# ---------------------------------------------------------------- npz and validate_arrays


def good_arrays():
    x = np.random.randint(0, 256, (12, 5, 6), dtype=np.uint8)
    return {"x_train": x, "y_train": np.arange(12) % 3, "x_test": x[:6], "y_test": np.arange(6) % 3}


def test_npz_good(tmp_path):
    np.savez(tmp_path / "u8.npz", **good_arrays())
    s = data.load(f"npz:{tmp_path / 'u8.npz'}", val_size=3)
    assert s.train.x.dtype == np.uint8 and s.train.x.shape == (9, 5, 6, 1) and len(s.val) == 3
    assert s.info.num_classes == 3 and s.info.class_names == ("0", "1", "2")
    assert s.info.input_shape == (5, 6, 1) and s.info.source == str(tmp_path / "u8.npz")
    arrays = good_arrays()
    arrays["x_train"] = np.random.rand(12, 5, 6, 3)
    arrays["x_test"] = np.random.rand(6, 5, 6, 3)
    np.savez(tmp_path / "f64.npz", **arrays)
    s = data.load(f"npz:{tmp_path / 'f64.npz'}", val_size=3)
    assert s.train.x.dtype == np.float32 and s.test.x.shape == (6, 5, 6, 3)


BAD_NPZ = {
    "negative labels": (lambda a: a["y_train"].__setitem__(0, -1), "y_train: negative label -1"),
    "non-integer labels": (lambda a: a.update(y_train=a["y_train"] + 0.5), "non-integer"),
    "nan pixels": (
        lambda a: a.update(x_train=np.where(a["x_train"] > 128, np.nan, 1.0)),
        "NaN or inf",
    ),
    "inf pixels": (lambda a: a.update(x_test=np.full((6, 5, 6), np.inf)), "x_test.*NaN or inf"),
    "length mismatch": (
        lambda a: a.update(y_train=a["y_train"][:-1]),
        "length mismatch: 12 images but 11 labels",
    ),
    "empty": (lambda a: a.update(x_test=np.zeros((0, 5, 6)), y_test=np.zeros(0, int)), "empty"),
    # (N, D) vectors are valid inputs: what fails is train vectors beside test images.
    "rank 2": (lambda a: a.update(x_train=a["x_train"].reshape(12, 30)),
               r"x_test images are \(5, 6, 1\) but x_train images are \(30,\)"),
    "rank 5": (lambda a: a.update(x_train=a["x_train"][:, None, ..., None]), "rank 5"),
    "one class": (lambda a: a.update(y_train=np.zeros(12, int)), "only one class"),
    "channels first": (
        lambda a: a.update(x_train=np.zeros((12, 3, 5, 6), np.uint8)),
        "6 channels.*NHWC",
    ),
    "one-hot labels": (lambda a: a.update(y_train=np.eye(3)[a["y_train"]]), r"shape \(12, 3\)"),
    "string pixels": (lambda a: a.update(x_train=np.full((12, 5, 6), "a")), "dtype <U1"),
    "missing key": (lambda a: a.pop("y_test"), r"missing arrays \['y_test'\]"),
    "pickled object": (
        lambda a: a.update(y_test=np.array([{}] * 6, dtype=object)),
        "cannot read.*Object arrays",
    ),
    "shape mismatch": (lambda a: a.update(x_test=np.zeros((6, 4, 6), np.uint8)), "same"),
}


@pytest.mark.parametrize("case", sorted(BAD_NPZ))
def test_npz_bad_inputs(tmp_path, case):
    arrays = good_arrays()
    mutate, message = BAD_NPZ[case]
    mutate(arrays)
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=message):
        data.load(f"npz:{path}", val_size=3)


def test_npz_missing_file(tmp_path):
    with pytest.raises(ValueError, match="npz:.*nope.npz.*cannot read"):
        data.load(f"npz:{tmp_path / 'nope.npz'}")


def test_validate_arrays_label_range_and_shapes():
    x, y = data.validate_arrays(np.zeros((4, 2, 2)), np.array([[0], [1], [2], [1]]), where="w")
    assert x.shape == (4, 2, 2, 1) and y.shape == (4,) and y.dtype == np.int64
    with pytest.raises(ValueError, match=r"w: label 3 is outside \[0, 3\)"):
        data.validate_arrays(np.zeros((4, 2, 2)), np.array([0, 1, 2, 3]), where="w", num_classes=3)


def test_npz_vectors(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "v.npz", x_train=rng.random((30, 7)), y_train=np.arange(30) % 3,
             x_test=rng.random((9, 7)), y_test=np.arange(9) % 3)
    s = data.load(f"npz:{tmp_path / 'v.npz'}", val_size=6)
    assert s.train.x.shape == (24, 7) and s.train.x.dtype == np.float32
    assert s.info.input_shape == (7,) and not s.info.multilabel
