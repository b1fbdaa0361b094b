"""Datasets as numpy arrays: ``load(name) -> Splits(train, val, test, info)``.

Every source ends up as NHWC images and int64 labels, checked by one function
(:func:`validate_arrays`), then split into train/val with a stratified, seeded split
(CS231n "Setting hyperparameters": never tune on the test set, hold out a validation fold).

Pixel convention: 8-bit sources (MNIST, Fashion-MNIST, CIFAR, uint8 ``.npz``) stay
``uint8`` in [0, 255]; ``digits`` is ``float32`` in [0, 1]; other ``.npz`` dtypes become
``float32`` unchanged. ``recipes.preprocessing`` does the scaling and centring later.

Sources, all offline first:
  * ``digits``: scikit-learn's bundled 8x8 digits; 20% stratified test split with seed 0.
  * ``fashion_mnist`` / ``mnist``: IDX files in ``data_dir``, else (Fashion-MNIST only)
    ``/usr/share/datasets/fashion-mnist`` from Debian's ``dataset-fashion-mnist``, else tfds.
  * ``cifar10`` / ``cifar100``: the official binary or python archive extracted in
    ``data_dir`` (python pickles go through a restricted unpickler), else tfds.
  * ``npz:PATH``: a user file with ``x_train, y_train, x_test, y_test``.
"""

from __future__ import annotations

import codecs
import dataclasses
import gzip
import os
import pickle
import zipfile
import zlib
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

try:
    from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy < 2
    from numpy.core.multiarray import _reconstruct

NAMES = ("digits", "fashion_mnist", "mnist", "cifar10", "cifar100", "npz:PATH")
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"  # apt-get install dataset-fashion-mnist
FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
DIGIT_CLASSES = tuple(str(i) for i in range(10))
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IDX_IMAGES, IDX_LABELS = 0x00000803, 0x00000801  # magic: unsigned bytes, 3 dims / 1 dim


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Split:
    """One split: ``x`` images (N, H, W, C) and ``y`` int64 labels (N,)."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    def __repr__(self) -> str:
        return f"Split(x={self.x.dtype}{list(self.x.shape)}, y={self.y.dtype}{list(self.y.shape)})"


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a model and a report need to know about a dataset."""

    name: str
    num_classes: int
    input_shape: tuple[int, int, int]  # (H, W, C)
    class_names: tuple[str, ...]
    source: str  # where it came from: a module, a directory, "tfds:NAME" or the npz path


@dataclasses.dataclass(frozen=True, eq=False)
class Splits:
    """The three splits and the dataset's info, as returned by :func:`load`."""

    train: Split
    val: Split
    test: Split
    info: DatasetInfo


def validate_arrays(
    x: np.ndarray, y: np.ndarray, *, where: str, num_classes: int | None = None,
    min_classes: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """Checks one (images, labels) pair and returns it as NHWC images and int64 labels.

    Args:
        x: images, (N, H, W) or (N, H, W, C) with C <= 4, any real numeric dtype.
        y: integer class ids, (N,) or (N, 1).
        where: what the arrays are (e.g. ``"npz:a.npz x_train/y_train"``), for the messages.
        num_classes: if given, labels must lie in [0, num_classes).
        min_classes: fewest distinct labels accepted (1 for a val or test split).

    Returns:
        ``(x, y)`` with a channel axis added to rank-3 ``x`` and ``y`` as int64 of shape (N,).

    Raises:
        ValueError: naming ``where``, the problem and the fix.
    """
    x, y = np.asarray(x), np.asarray(y)

    def fail(problem: str) -> ValueError:
        return ValueError(f"{where}: {problem}")

    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise fail(f"pixels have dtype {x.dtype}; expected integer or floating point numbers")
    if x.size == 0 or y.size == 0:
        raise fail(f"empty arrays (x {x.shape}, y {y.shape}); give at least one example")
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise fail(f"images have rank {x.ndim} (shape {x.shape}); expected (N, H, W) or NHWC")
    if x.shape[-1] > 4:
        raise fail(
            f"images have {x.shape[-1]} channels (shape {x.shape}); expected at most 4 "
            "channels last (NHWC): transpose channels-first arrays"
        )
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        raise fail("pixels contain NaN or inf; clean or drop those images")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise fail(f"labels have shape {y.shape}; expected (N,) class ids (argmax one-hot labels)")
    if len(x) != len(y):
        raise fail(f"length mismatch: {len(x)} images but {len(y)} labels")
    if np.issubdtype(y.dtype, np.floating):
        if not (np.isfinite(y).all() and (y == np.round(y)).all()):
            raise fail("labels are non-integer; expected integer class ids 0..C-1")
    elif not np.issubdtype(y.dtype, np.integer):
        raise fail(f"labels have dtype {y.dtype}; expected integer class ids 0..C-1")
    y = y.astype(np.int64)
    if y.min() < 0:
        raise fail(f"negative label {y.min()}; expected class ids 0..C-1")
    if num_classes is not None and y.max() >= num_classes:
        raise fail(
            f"label {y.max()} is outside [0, {num_classes}); expected ids 0..{num_classes - 1}"
        )
    if len(np.unique(y)) < min_classes:
        raise fail(f"only one class ({y[0]}); a classifier needs at least two classes")
    return x, y


def read_idx(path: str | os.PathLike, magic: int | None = None) -> np.ndarray:
    """Reads an IDX file (the MNIST format), gzipped if its name ends in ``.gz``.

    Args:
        path: the file.
        magic: the expected magic number, ``IDX_IMAGES`` or ``IDX_LABELS``; None accepts both.

    Returns:
        uint8 array of shape (N, H, W) for images or (N,) for labels.

    Raises:
        ValueError: naming the file when it is unreadable, truncated or not the expected IDX.
    """
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise ValueError(
            f"{path}: cannot read IDX data ({e}); the file is truncated or "
            "corrupted: download it again"
        ) from e
    found = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
    if found not in (IDX_IMAGES, IDX_LABELS) or (magic is not None and found != magic):
        want = (
            f"{magic:#010x}" if magic is not None else f"{IDX_IMAGES:#010x} or {IDX_LABELS:#010x}"
        )
        got = "none (file too short)" if found is None else f"{found:#010x}"
        raise ValueError(
            f"{path}: wrong IDX magic number {got}, expected {want}; "
            "is it the right file (images vs labels), gzipped only if its name ends in .gz?"
        )
    ndim = 3 if found == IDX_IMAGES else 1
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(raw)} bytes); download it again")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    if len(raw) != header + int(np.prod(dims)):
        raise ValueError(
            f"{path}: header says shape {dims} ({header + int(np.prod(dims))} "
            f"bytes) but the file has {len(raw)} bytes; download it again"
        )
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims).copy()


def _find(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            return candidate
    return None


def _idx_dataset(name: str, data_dir: Path | None) -> tuple[Split, Split, DatasetInfo]:
    names = FASHION_CLASSES if name == "fashion_mnist" else DIGIT_CLASSES
    default = [Path(FASHION_MNIST_DIR)] if name == "fashion_mnist" else []
    for d in [data_dir] if data_dir else default:
        paths = [_find(d, stem) for pair in IDX_FILES.values() for stem in pair]
        if None in paths:
            continue
        arrays = [read_idx(p, magic) for p, magic in zip(paths, [IDX_IMAGES, IDX_LABELS] * 2)]
        train, test = (
            Split(*validate_arrays(x, y, where=f"{name} {k} ({d})", num_classes=10))
            for k, x, y in (("train", *arrays[:2]), ("test", *arrays[2:]))
        )
        return train, test, DatasetInfo(name, 10, (28, 28, 1), names, str(d))
    hint = "`apt-get install dataset-fashion-mnist`, " if name == "fashion_mnist" else ""
    files = ", ".join(f"{stem}[.gz]" for pair in IDX_FILES.values() for stem in pair)
    how = f"{hint}set dataset.data_dir to a directory with {files}"
    train, test, info = _from_tfds(name, data_dir, how)
    return train, test, dataclasses.replace(info, class_names=names)


# Official archive layouts: (subfolder, train files, test files, class-names file).
_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_BIN = {
    "cifar10": (
        "cifar-10-batches-bin",
        tuple(f"{b}.bin" for b in _BATCHES),
        ("test_batch.bin",),
        "batches.meta.txt",
    ),
    "cifar100": ("cifar-100-binary", ("train.bin",), ("test.bin",), "fine_label_names.txt"),
}
_CIFAR_PY = {
    "cifar10": ("cifar-10-batches-py", _BATCHES, ("test_batch",), "batches.meta"),
    "cifar100": ("cifar-100-python", ("train",), ("test",), "meta"),
}
_CIFAR_CLASSES = {"cifar10": 10, "cifar100": 100}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, lists, dicts, bytes and numbers; refuses every other global.

    The CIFAR python batches are Python 2 pickles: a plain ``pickle.load`` runs whatever code
    an altered file carries, so ``find_class`` resolves only what array reconstruction needs.
    """

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # written by numpy < 2
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,  # how Python 3 writes bytes at protocol 2
    }

    def find_class(self, module: str, name: str):
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}") from None


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            d = _ArrayUnpickler(f, encoding="bytes").load()
    except Exception as e:  # a malformed pickle fails in many ways; all mean a bad file
        raise ValueError(
            f"{path}: not a CIFAR python file ({type(e).__name__}: {e}); only "
            "numpy arrays and plain containers are loaded: re-extract the archive"
        ) from e
    if not isinstance(d, dict):
        raise ValueError(f"{path}: not a CIFAR python file (a {type(d).__name__}, not a dict)")
    return d


def _cifar_bin(path: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    label_bytes = 2 if name == "cifar100" else 1  # cifar-100 records: coarse then fine label
    raw, record = np.fromfile(path, np.uint8), label_bytes + 3072
    if raw.size == 0 or raw.size % record:
        raise ValueError(
            f"{path}: {raw.size} bytes is not a whole number of {record}-byte "
            "CIFAR records; the file is truncated: re-extract the archive"
        )
    raw = raw.reshape(-1, record)  # [labels, 1024 R, 1024 G, 1024 B], each plane row-major
    x = raw[:, label_bytes:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(x), raw[:, label_bytes - 1]


def _cifar_py(path: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    d, key = _unpickle(path), b"fine_labels" if name == "cifar100" else b"labels"
    data = d.get(b"data")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.shape[1:] != (3072,):
        raise ValueError(f"{path}: b'data' is not a uint8 (N, 3072) array; re-extract the archive")
    if key not in d:
        raise ValueError(f"{path}: no {key!r} labels; is it a file of the other CIFAR?")
    x = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(x), np.asarray(d[key])


def _cifar_names(meta: Path, num_classes: int) -> tuple[str, ...]:
    if not meta.is_file():  # optional: fall back to "0".."C-1"
        return tuple(str(i) for i in range(num_classes))
    if meta.suffix == ".txt":
        names = [line.strip() for line in meta.read_text().splitlines() if line.strip()]
    else:
        d = _unpickle(meta)
        names = d.get(b"fine_label_names" if num_classes == 100 else b"label_names", [])
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    if len(names) != num_classes:
        raise ValueError(f"{meta}: {len(names)} class names, expected {num_classes}")
    return tuple(names)


def _cifar(name: str, data_dir: Path | None) -> tuple[Split, Split, DatasetInfo]:
    c = _CIFAR_CLASSES[name]
    for (sub, train, test, meta), read in (
        (_CIFAR_BIN[name], _cifar_bin),
        (_CIFAR_PY[name], _cifar_py),
    ):
        for d in (data_dir, data_dir / sub) if data_dir else ():
            if not all((d / f).is_file() for f in train + test):
                continue
            splits = []
            for files in (train, test):
                xs, ys = zip(*(read(d / f, name) for f in files))
                where = f"{name} {', '.join(str(d / f) for f in files)}"
                x, y = validate_arrays(
                    np.concatenate(xs), np.concatenate(ys), where=where, num_classes=c
                )
                splits.append(Split(x, y))
            info = DatasetInfo(name, c, (32, 32, 3), _cifar_names(d / meta, c), str(d))
            return splits[0], splits[1], info
    how = (
        f"set dataset.data_dir to a directory with the official binary ({_CIFAR_BIN[name][0]}"
        f") or python ({_CIFAR_PY[name][0]}) archive extracted"
    )
    return _from_tfds(name, data_dir, how)


def _from_tfds(name: str, data_dir: Path | None, how: str) -> tuple[Split, Split, DatasetInfo]:
    """Loads train and test through tensorflow_datasets (cached, or downloaded when online)."""
    try:
        import tensorflow_datasets as tfds

        datasets, info = tfds.load(
            name,
            split=["train", "test"],
            as_supervised=True,
            batch_size=10_000,
            data_dir=data_dir,
            with_info=True,
        )
        # Batches, not batch_size=-1: that aborts the process on tfds.testing.mock_data.
        arrays = [[np.concatenate(a) for a in zip(*tfds.as_numpy(ds))] for ds in datasets]
    except Exception as e:  # tfds fails in many ways offline (network, missing modules, files)
        raise ValueError(
            f"dataset.name={name!r}: no local files and tensorflow_datasets could "
            f"not load it ({type(e).__name__}: {e}). Fix: {how}, or run once with "
            "internet access so tfds downloads it (into dataset.data_dir if set, "
            "else ~/tensorflow_datasets)"
        ) from e
    label = info.features["label"]
    splits = [
        Split(*validate_arrays(x, y, where=f"tfds:{name} {k}", num_classes=label.num_classes))
        for k, (x, y) in zip(("train", "test"), arrays)
    ]
    shape = tuple(int(s) for s in splits[0].x.shape[1:])
    info = DatasetInfo(name, label.num_classes, shape, tuple(label.names), f"tfds:{name}")
    return splits[0], splits[1], info


def _digits() -> tuple[Split, Split, DatasetInfo]:
    from sklearn.datasets import load_digits

    digits = load_digits()  # pixels are counts 0..16 of an 8x8 grid over 32x32 bitmaps
    x, y = validate_arrays(
        (digits.images / 16.0).astype(np.float32), digits.target, where="digits", num_classes=10
    )
    # No official test split: a fixed seed keeps the test set the same whatever dataset.seed.
    train, test = _split(Split(x, y), 0.2, seed=0, field="digits test split")
    info = DatasetInfo("digits", 10, (8, 8, 1), DIGIT_CLASSES, "sklearn.datasets.load_digits")
    return train, test, info


def _npz(path_text: str) -> tuple[Split, Split, DatasetInfo]:
    path, keys = Path(path_text).expanduser(), ("x_train", "y_train", "x_test", "y_test")
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in keys if k not in f.files]
            arrays = {k: f[k] for k in keys if k in f.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise ValueError(
            f"dataset.name='npz:{path_text}': cannot read it ({e}); give an .npz of plain "
            "numeric arrays saved with np.savez (object arrays need pickle: refused)"
        ) from e
    if missing:
        raise ValueError(
            f"dataset.name='npz:{path_text}': missing arrays {missing}; the file "
            f"needs {', '.join(keys)}"
        )
    splits = []
    for k in ("train", "test"):
        x, y = validate_arrays(arrays[f"x_{k}"], arrays[f"y_{k}"], where=f"npz:{path} x_{k}/y_{k}")
        splits.append(Split(x if x.dtype == np.uint8 else x.astype(np.float32), y))
    train, test = splits
    if train.x.shape[1:] != test.x.shape[1:]:
        raise ValueError(
            f"npz:{path}: x_train images are {train.x.shape[1:]} but x_test "
            f"images are {test.x.shape[1:]}; both need the same (H, W, C)"
        )
    c = int(max(train.y.max(), test.y.max())) + 1
    shape = tuple(int(s) for s in train.x.shape[1:])
    info = DatasetInfo(f"npz:{path_text}", c, shape, tuple(map(str, range(c))), str(path))
    return train, test, info


def _split(split: Split, size: float | int, seed: int, field: str) -> tuple[Split, Split]:
    """Stratified, seeded split into (rest, held out of ``size``); both keep source order."""
    try:
        rest, held = train_test_split(
            np.arange(len(split)), test_size=size, stratify=split.y, random_state=seed
        )
    except ValueError as e:
        raise ValueError(
            f"{field}={size!r}: no stratified split of {len(split)} examples over "
            f"{len(np.unique(split.y))} classes ({e})"
        ) from e
    rest, held = np.sort(rest), np.sort(held)
    return Split(split.x[rest], split.y[rest]), Split(split.x[held], split.y[held])


def load(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    val_size: float | int = 0.1,
    seed: int = 0,
    limit: int = 0,
) -> Splits:
    """Loads a dataset and splits off a stratified, seeded validation set.

    Args:
        name: ``digits``, ``fashion_mnist``, ``mnist``, ``cifar10``, ``cifar100`` or ``npz:PATH``.
        data_dir: where the official files are (or a tfds data dir); None or "" = the default.
        val_size: fraction in (0, 1) or count in [1, n_train) of train held out for validation.
        seed: seed of the validation split and of ``limit``'s subset.
        limit: if > 0, keep a stratified subset of this many training examples (quick runs).

    Returns:
        ``Splits(train, val, test, info)``; train and val are disjoint parts of the source's
        train split, test is the source's test split.

    Raises:
        ValueError: unknown name, missing files, bad arrays or bad ``val_size``/``limit``.
    """
    is_fraction = isinstance(val_size, (float, np.floating)) and 0 < val_size < 1
    is_count = isinstance(val_size, (int, np.integer)) and not isinstance(val_size, bool)
    if not (is_fraction or (is_count and val_size >= 1)):
        raise ValueError(
            f"dataset.val_size={val_size!r}: expected a fraction in (0, 1) or an "
            "integer count >= 1 of training examples"
        )
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 0:
        raise ValueError(f"dataset.limit={limit!r}: expected an integer >= 0 (0 = all examples)")
    directory = Path(data_dir).expanduser() if data_dir else None
    if not isinstance(name, str):
        name = repr(name)
    if name == "digits":
        train, test, info = _digits()
    elif name in ("fashion_mnist", "mnist"):
        train, test, info = _idx_dataset(name, directory)
    elif name in _CIFAR_CLASSES:
        train, test, info = _cifar(name, directory)
    elif name.startswith("npz:") and len(name) > 4:
        train, test, info = _npz(name[4:])
    else:
        raise ValueError(f"dataset.name={name!r} is not a dataset; valid names: {', '.join(NAMES)}")
    if is_count and val_size >= len(train):
        raise ValueError(
            f"dataset.val_size={val_size!r}: a count must be in [1, {len(train)}) "
            f"for the {len(train)} training examples of {info.name}"
        )
    train, val = _split(train, val_size, seed, "dataset.val_size")
    if 0 < limit < len(train):
        _, train = _split(train, limit, seed, "dataset.limit")
    return Splits(train, val, test, info)


def validate_splits(splits: Splits) -> Splits:
    """Checks splits built by hand (``recipes.train.run(splits=...)``) as ``load`` checks its own.

    Raises:
        ValueError: naming the split and the problem (NaN pixels, labels out of range, ...).
    """
    out = {}
    for k in ("train", "val", "test"):
        split = getattr(splits, k)
        if k != "train" and len(split.y) == 0:
            out[k] = split
            continue
        x, y = validate_arrays(split.x, split.y, where=f"splits.{k}",
                               num_classes=splits.info.num_classes,
                               min_classes=2 if k == "train" else 1)
        out[k] = split if x is split.x and y is split.y else Split(x, y)
    return Splits(info=splits.info, **out)
