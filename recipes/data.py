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

A ``data_dir`` that is given must exist and hold the files (or be a tensorflow-datasets
data dir with a ``NAME/VERSION/`` folder); only an empty ``data_dir`` falls back to the
default location and to tfds. Labels are checked before any split: every class of the test
split must occur in the train split (a train class absent from the test split only warns),
and an ``.npz`` file's labels must be the ids 0..C-1 of the classes that occur.

Lazy sources (``recipes.sources``: ``x`` is ``sources.Images``, read on demand, never all in
memory; :func:`is_lazy` tells it from an array):
  * ``folder:PATH``: one sub-folder of images per class (``PATH/train`` + ``PATH/test`` if
    both exist, else a stratified test split of ``dataset.test_size``), resized to
    ``dataset.image_size`` and converted by ``dataset.color_mode``.
  * ``tfds:NAME[/CONFIG][:TRAIN_SPLIT[:TEST_SPLIT]]``: any tensorflow-datasets dataset with
    (image or 1-D vector, ClassLabel) supervised keys, from ``dataset.data_dir``.
  * :func:`from_user`: the user's arrays, ``tf.data`` pair or ``Splits``; vectors (N, D) as
    well as images, and labels as ids, one-hot, 0/1 (binary) or a 0/1 multi-label matrix.

Test splits carved here (``digits``, ``folder:`` without ``test/``, ``tfds:`` without a test
split, ``from_user((x, y))``) use seed 0, not ``dataset.seed``: trying seeds changes the
validation fold, never the test set. Splits of a lazy ``x`` are lazy views
(``x.subset(idx)``): nothing is loaded to split.
"""

from __future__ import annotations

import codecs
import dataclasses
import gzip
import itertools
import math
import os
import pickle
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import tensorflow as tf
from sklearn.model_selection import train_test_split

from recipes import readers, sources

try:
    from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy < 2
    from numpy.core.multiarray import _reconstruct

NAMES = ("digits", "fashion_mnist", "mnist", "cifar10", "cifar100", "npz:PATH", "folder:PATH",
         "tfds:NAME")
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
# Largest pixel magnitude accepted. The statistics square deviations and sum the squares in
# float32 (Normalization.adapt's variance, BatchNormalization, the first layer's sums): a
# deviation of at most 2e12 squares to 4e24, and 2**46 (7e13) such terms, more values than
# any array in memory, still sum to less than float32's largest number, 3.4e38. No image
# format comes near it (16-bit images end at 65535): larger values are unscaled or garbage.
MAX_ABS_PIXEL = 1e12


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Split:
    """One split: ``x`` inputs and ``y`` labels of the same length.

    ``x``: images (N, H, W, C) or vectors (N, D), an array or lazy ``sources.Images``;
    ``y``: int64 class ids (N,), or float32 0/1 (N, K) when multi-label.
    """

    x: np.ndarray | sources.Images
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    def __repr__(self) -> str:
        lazy = " lazy" if is_lazy(self.x) else ""
        return (f"Split(x={self.x.dtype}{list(self.x.shape)}{lazy}, "
                f"y={self.y.dtype}{list(self.y.shape)})")


def is_lazy(x: object) -> bool:
    """Whether ``x`` is lazy ``sources.Images`` (read on demand) rather than an array."""
    return sources.is_lazy(x)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a model and a report need to know about a dataset."""

    name: str
    num_classes: int  # C classes, or K labels when multilabel
    input_shape: tuple[int, ...]  # (H, W, C) images or (D,) vectors
    class_names: tuple[str, ...]
    source: str  # where it came from: a module, a directory, "tfds:NAME" or the npz path
    multilabel: bool = False  # y is a 0/1 (N, K) matrix of K independent labels


@dataclasses.dataclass(frozen=True, eq=False)
class Splits:
    """The three splits and the dataset's info, as returned by :func:`load`."""

    train: Split
    val: Split
    test: Split
    info: DatasetInfo


def validate_arrays(
    x: np.ndarray | sources.Images, y: np.ndarray, *, where: str,
    num_classes: int | None = None, min_classes: int = 2, multilabel: bool = False,
) -> tuple[np.ndarray | sources.Images, np.ndarray]:
    """Checks one (inputs, labels) pair and returns it as NHWC images or vectors and labels.

    Checks run in the order that blames the real cause: dtypes and shapes, pixel values
    (finite, magnitude at most ``MAX_ABS_PIXEL``), then label values (range first). A lazy
    ``x`` (``sources.Images``) has its shape and dtype checked, not its values: reading them
    all is what lazy sources avoid (8-bit files are always in range; ``preprocessing.fit``
    refuses statistics that come out NaN or inf).

    Args:
        x: images (N, H, W) or (N, H, W, C) with C <= 4, or vectors (N, D); any real
            numeric dtype; an array or lazy ``sources.Images``.
        y: integer class ids, (N,) or (N, 1); with ``multilabel``, a 0/1 matrix (N, K).
        where: what the arrays are (e.g. ``"npz:a.npz x_train/y_train"``), for the messages.
        num_classes: if given, labels must lie in [0, num_classes) (multi-label: K columns).
        min_classes: fewest distinct labels accepted (1 for a val or test split).
        multilabel: ``y`` holds K independent 0/1 labels per example.

    Returns:
        ``(x, y)`` with a channel axis added to rank-3 ``x``; ``y`` int64 (N,), or float32
        (N, K) with ``multilabel``. A lazy ``x`` is returned as it is.

    Raises:
        ValueError: naming ``where``, the problem and the fix.
    """
    lazy = is_lazy(x)
    x, y = (x if lazy else np.asarray(x)), np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1 and not multilabel:
        y = y[:, 0]
    if y.ndim != (2 if multilabel else 1):
        want = "a 0/1 matrix (N, K) of multi-label targets" if multilabel else (
            "(N,) class ids (argmax one-hot labels)")
        raise ValueError(f"{where}: labels have shape {y.shape}; expected {want}")
    if x.ndim and len(x) == len(y) == 0:
        raise ValueError(
            f"{where}: empty arrays (x {x.shape}, y {y.shape}); give at least one example"
        )
    if x.ndim and len(x) != len(y):
        raise ValueError(f"{where}: length mismatch: {len(x)} images but {len(y)} labels")
    x = _check_lazy(x, where) if lazy else _check_images(x, where)  # a 0-d x fails on its rank
    if multilabel:
        y = _check_multilabel(y, where, num_classes)
    else:
        y = _check_labels(y, where, num_classes)
    if len(_present(y)) < min_classes:
        one = f"label column {_present(y)[:1].tolist()}" if multilabel else f"class ({y[0]})"
        raise ValueError(
            f"{where}: only one {one}; a classifier needs at least two classes"
        )
    return x, y


def _present(y: np.ndarray) -> np.ndarray:
    """The classes that occur: the ids of (N,) labels, the set columns of a (N, K) matrix."""
    return np.unique(y) if y.ndim == 1 else np.flatnonzero(y.any(axis=0))


def _check_lazy(x: sources.Images, where: str) -> sources.Images:
    """The image half of `validate_arrays` for lazy ``x``: its shape (values stay unread)."""
    if x.ndim not in (2, 4) or 0 in x.shape[1:]:
        raise ValueError(f"{where}: examples have shape {x.shape[1:]}; expected (H, W, C) "
                         "images or (D,) vectors with every size >= 1")
    if x.ndim == 4 and x.shape[-1] > 4:
        raise ValueError(f"{where}: images have {x.shape[-1]} channels; expected at most 4 "
                         "channels last (NHWC)")
    return x


def _check_multilabel(y: np.ndarray, where: str, num_classes: int | None) -> np.ndarray:
    """The label half of `validate_arrays` for multi-label targets: a 0/1 (N, K) matrix."""
    if y.dtype == np.bool_ or not np.issubdtype(y.dtype, np.number):
        raise ValueError(f"{where}: multi-label targets have dtype {y.dtype}; expected a 0/1 "
                         "numeric matrix (N, K), e.g. y.astype('float32')")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"{where}: multi-label targets hold values other than 0 and 1; "
                         "expected a 0/1 matrix (N, K)")
    if num_classes is not None and y.shape[1] != num_classes:
        raise ValueError(f"{where}: {y.shape[1]} label columns but num_classes={num_classes}; "
                         "give one column per label")
    return y.astype(np.float32)


def _check_images(x: np.ndarray, where: str) -> np.ndarray:
    """The image half of `validate_arrays`: dtype, NHWC or (N, D) shape, finite, bounded."""
    if x.dtype == np.bool_:
        raise ValueError(
            f"{where}: pixels have dtype bool; convert masks to numbers first, e.g. "
            "x.astype('uint8') * 255 (8-bit) or x.astype('float32') (0/1)"
        )
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise ValueError(
            f"{where}: pixels have dtype {x.dtype}; expected integer or floating point numbers "
            "(decode strings or objects into a numeric array first)"
        )
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim not in (2, 4):
        raise ValueError(
            f"{where}: images have rank {x.ndim} (shape {x.shape}); expected (N, H, W) or NHWC "
            "images, or (N, D) vectors"
        )
    if 0 in x.shape[1:]:
        raise ValueError(
            f"{where}: images have shape {x.shape[1:]}, a zero-sized dimension; expected "
            "(H, W, C) or (D,) with every size >= 1"
        )
    if x.ndim == 4 and x.shape[-1] > 4:
        raise ValueError(
            f"{where}: images have {x.shape[-1]} channels (shape {x.shape}); expected at most 4 "
            "channels last (NHWC): transpose channels-first arrays"
        )
    if np.issubdtype(x.dtype, np.integer) and np.iinfo(x.dtype).max <= MAX_ABS_PIXEL:
        return x  # uint8 ... int32: always in range, no pass over the pixels needed
    lo, hi = x.min(), x.max()  # NaN propagates through both: no boolean copy of x
    if not (np.isfinite(lo) and np.isfinite(hi)):
        bad = ~np.isfinite(x)
        first = int(np.argmax(bad.reshape(len(x), -1).any(axis=1)))
        raise ValueError(
            f"{where}: pixels contain NaN or inf ({int(bad.sum())} values, the first in image "
            f"{first}); clean or drop those images"
        )
    if max(-float(lo), float(hi)) > MAX_ABS_PIXEL:
        raise ValueError(
            f"{where}: pixels range from min {float(lo):.4g} to max {float(hi):.4g} ({x.dtype}); "
            f"magnitudes above {MAX_ABS_PIXEL:.0e} overflow the float32 statistics (mean, "
            "variance). Fix: scale the inputs to [0, 1] or [-1, 1], e.g. x / np.abs(x).max()"
        )
    return x


def _check_labels(y: np.ndarray, where: str, num_classes: int | None) -> np.ndarray:
    """The label half of `validate_arrays`: integer ids in range, returned as int64."""
    if y.dtype == np.bool_:
        raise ValueError(
            f"{where}: labels have dtype bool; expected integer class ids: "
            "y.astype('int64') makes False/True the classes 0/1"
        )
    if np.issubdtype(y.dtype, np.floating):
        if not (np.isfinite(y).all() and (y == np.round(y)).all()):
            raise ValueError(f"{where}: labels are non-integer; expected integer class ids 0..C-1")
    elif not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{where}: labels have dtype {y.dtype}; expected integer class ids 0..C-1")
    lo, hi = int(y.min()), int(y.max())  # before the int64 cast: uint64 or 1e30 would wrap
    if lo < 0:
        raise ValueError(f"{where}: negative label {lo}; expected class ids 0..C-1")
    if num_classes is not None and hi >= num_classes:
        raise ValueError(
            f"{where}: label {hi} is outside [0, {num_classes}); expected ids "
            f"0..{num_classes - 1} of the {num_classes} classes: remap or drop the others"
        )
    if hi > np.iinfo(np.int64).max:
        raise ValueError(f"{where}: label {hi} is too large for a class id; expected ids 0..C-1")
    return y.astype(np.int64)


def _ids(ids, limit: int = 10) -> str:
    """``"0, 1, 5"``, shortened to the first ``limit`` ids and the count of all of them."""
    ids = [int(i) for i in ids]
    text = ", ".join(map(str, ids[:limit]))
    return text + (f", ... ({len(ids)} in all)" if len(ids) > limit else "")


def _check_classes(where: str, train: tuple[str, np.ndarray], others: dict[str, np.ndarray],
                   num_classes: int) -> None:
    """Every class of an evaluation split must occur in the train split (a ValueError).

    A train class absent from an evaluation split, or one of the ``num_classes`` absent from
    the train split, only warns: the run is sound, its accuracy just says nothing about it.

    Args:
        where: what the splits belong to, prefixed to the messages (e.g. ``"npz:a.npz "``).
        train: (name for messages, labels) of the train split; ids (N,) or a multi-label
            (N, K) matrix, whose classes are the columns that are ever set.
        others: name for messages -> labels of each non-empty evaluation split.
        num_classes: the dataset's number of classes (the model's outputs).
    """
    name, seen = train[0], _present(train[1])
    for other, y in others.items():  # errors first, then the warnings
        unseen = np.setdiff1d(_present(y), seen)
        if unseen.size:
            raise ValueError(
                f"{where}{other} has classes that never occur in {name}: {_ids(unseen)} "
                f"({name} has {_ids(seen)}); a model cannot learn a class it never sees: add "
                f"training examples of them or drop them from {other}"
            )
    if len(seen) < num_classes:
        present = set(seen.tolist())
        absent = itertools.islice((i for i in range(num_classes) if i not in present), 10)
        warnings.warn(
            f"{where}{name}: {num_classes - len(seen)} of the {num_classes} classes never occur "
            f"({_ids(absent)}{', ...' if num_classes - len(seen) > 10 else ''}); the model's "
            "outputs for them are never trained",
            stacklevel=3,
        )
    for other, y in others.items():
        missing = np.setdiff1d(seen, _present(y))
        if missing.size:
            warnings.warn(
                f"{where}{other} lacks classes of {name}: {_ids(missing)}; its accuracy "
                "says nothing about them",
                stacklevel=3,
            )


def _check_same_images(where: str, named: dict[str, np.ndarray]) -> None:
    """Every split needs the first split's (H, W, C) and pixel convention (uint8 or not)."""
    (first, x0), *rest = named.items()
    for name, x in rest:
        if x.shape[1:] != x0.shape[1:]:
            fix = ""
            if {x.shape[-1], x0.shape[-1]} == {1, 3}:
                fix = " (gray vs color: np.repeat(x, 3, axis=-1) gives gray images 3 channels)"
            raise ValueError(
                f"{where}{name} images are {x.shape[1:]} but {first} images are "
                f"{x0.shape[1:]}; "
                f"every split needs the same (H, W, C){fix}"
            )
        if (x.dtype == np.uint8) != (x0.dtype == np.uint8):
            raise ValueError(
                f"{where}{name} has dtype {x.dtype} but {first} has {x0.dtype}: uint8 pixels are "
                "scaled by 1/255 and other dtypes are not, so the splits would differ in "
                "scale; give every split the same dtype"
            )


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


def _data_dir(data_dir: str | os.PathLike | None, expected: str, default: str) -> Path | None:
    """``dataset.data_dir`` as a Path: None when empty, else an existing directory.

    Args:
        data_dir: the user's value.
        expected: what the directory should hold, for the messages.
        default: where the source looks when ``data_dir`` is empty, for the messages.

    Raises:
        ValueError: not a path, not found, or a file.
    """
    if data_dir is None or (isinstance(data_dir, (str, os.PathLike)) and not os.fspath(data_dir)):
        return None
    if not isinstance(data_dir, (str, os.PathLike)):
        raise ValueError(
            f"dataset.data_dir={data_dir!r}: expected a directory path, or empty for {default}"
        )
    path, shown = Path(data_dir).expanduser(), os.fspath(data_dir)
    if not path.exists():
        raise ValueError(
            f"dataset.data_dir={shown!r}: directory not found; give the directory holding "
            f"{expected}, or leave dataset.data_dir empty to use {default}"
        )
    if not path.is_dir():
        raise ValueError(
            f"dataset.data_dir={shown!r}: is a file, give the directory holding {expected}"
        )
    return path


def _is_tfds_dir(directory: Path, name: str) -> bool:
    """Whether ``directory`` is a tensorflow-datasets data dir holding ``name``."""
    return any((directory / name).glob("*/dataset_info.json"))


def _contents(directory: Path) -> str:
    try:
        entries = sorted(os.listdir(directory))
    except OSError as e:
        return f"it cannot be listed ({e})"
    if not entries:
        return "it is empty"
    return f"it holds {', '.join(entries[:6])}{', ...' if len(entries) > 6 else ''}"


def _idx_dataset(
    name: str, data_dir: str | os.PathLike | None
) -> tuple[Split, Split, DatasetInfo]:
    names = FASHION_CLASSES if name == "fashion_mnist" else DIGIT_CLASSES
    stems = [stem for pair in IDX_FILES.values() for stem in pair]
    files = ", ".join(f"{stem}[.gz]" for stem in stems)
    hint = "`apt-get install dataset-fashion-mnist`, " if name == "fashion_mnist" else ""
    default = (
        f"{FASHION_MNIST_DIR}, else tensorflow_datasets" if name == "fashion_mnist"
        else "tensorflow_datasets"
    )
    directory = _data_dir(data_dir, f"the {name} IDX files {files}", default)
    default_dirs = [Path(FASHION_MNIST_DIR)] if name == "fashion_mnist" else []
    for d in [directory] if directory else default_dirs:
        paths = [_find(d, stem) for stem in stems]
        if None in paths:
            continue
        arrays = [read_idx(p, magic) for p, magic in zip(paths, [IDX_IMAGES, IDX_LABELS] * 2)]
        train, test = (
            Split(*validate_arrays(x, y, where=f"{name} {k} ({d})", num_classes=10,
                                   min_classes=2 if k == "train" else 1))
            for k, x, y in (("train", *arrays[:2]), ("test", *arrays[2:]))
        )
        return train, test, DatasetInfo(name, 10, (28, 28, 1), names, str(d))
    if directory is not None and not _is_tfds_dir(directory, name):
        missing = [f"{stem}[.gz]" for stem in stems if _find(directory, stem) is None]
        lacks = f"; it lacks {', '.join(missing)}" if len(missing) < len(stems) else ""
        raise ValueError(
            f"dataset.data_dir={os.fspath(data_dir)!r}: no {name} files there "
            f"({_contents(directory)}){lacks}. Give the directory holding {files}, or leave "
            f"dataset.data_dir empty to use {default}"
        )
    how = f"{hint}set dataset.data_dir to a directory with {files}"
    train, test, info = _from_tfds(name, directory, how)
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


def restricted_unpickle(path: Path) -> dict:
    """Reads a CIFAR python pickle with an unpickler that builds only arrays and containers.

    Raises:
        ValueError: a malformed file, one naming any other class (code would run), or one
            that does not hold a dict.
    """
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
    d, key = restricted_unpickle(path), b"fine_labels" if name == "cifar100" else b"labels"
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
        d = restricted_unpickle(meta)
        names = d.get(b"fine_label_names" if num_classes == 100 else b"label_names", [])
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    if len(names) != num_classes:
        raise ValueError(f"{meta}: {len(names)} class names, expected {num_classes}")
    return tuple(names)


def _read_cifar(d: Path, name: str, layout: tuple, read) -> tuple[Split, Split, DatasetInfo]:
    """Reads one extracted official archive in ``d`` (all its files are present)."""
    c, (_, train, test, meta) = _CIFAR_CLASSES[name], layout
    splits = []
    for files, least in ((train, 2), (test, 1)):
        xs, ys = zip(*(read(d / f, name) for f in files))
        where = f"{name} {', '.join(str(d / f) for f in files)}"
        x, y = validate_arrays(np.concatenate(xs), np.concatenate(ys), where=where,
                               num_classes=c, min_classes=least)
        splits.append(Split(x, y))
    info = DatasetInfo(name, c, (32, 32, 3), _cifar_names(d / meta, c), str(d))
    return splits[0], splits[1], info


def _cifar(name: str, data_dir: str | os.PathLike | None) -> tuple[Split, Split, DatasetInfo]:
    (bin_sub, bin_train, bin_test, _), (py_sub, py_train, py_test, _) = (
        _CIFAR_BIN[name], _CIFAR_PY[name]
    )
    expected = f"the official binary ({bin_sub}) or python ({py_sub}) archive extracted"
    default = "tensorflow_datasets"
    directory = _data_dir(data_dir, expected, default)
    closest = None  # (directory, its missing files) of the most complete layout seen
    for layout, read in ((_CIFAR_BIN[name], _cifar_bin), (_CIFAR_PY[name], _cifar_py)):
        sub, train, test, _ = layout
        for d in (directory, directory / sub) if directory else ():
            missing = [f for f in train + test if not (d / f).is_file()]
            if not missing:
                return _read_cifar(d, name, layout, read)
            if len(missing) < len(train + test) and (closest is None or
                                                     len(missing) < len(closest[1])):
                closest = (d, missing)
    if directory is not None and not _is_tfds_dir(directory, name):
        shown = os.fspath(data_dir)
        if closest is not None:
            raise ValueError(
                f"dataset.data_dir={shown!r}: {closest[0]} lacks {', '.join(closest[1])}; "
                "the archive is incomplete: re-extract it"
            )
        raise ValueError(
            f"dataset.data_dir={shown!r}: no {name} files there ({_contents(directory)}); "
            f"expected {expected} in it ({bin_sub}/{bin_train[0]} ... {bin_test[-1]} or "
            f"{py_sub}/{py_train[0]} ... {py_test[-1]}). Give that directory, or leave "
            f"dataset.data_dir empty to use {default}"
        )
    how = (
        f"set dataset.data_dir to a directory with the official binary ({bin_sub}"
        f") or python ({py_sub}) archive extracted"
    )
    return _from_tfds(name, directory, how)


def _from_tfds(name: str, data_dir: Path | None, how: str) -> tuple[Split, Split, DatasetInfo]:
    """Loads train and test through tensorflow_datasets (cached, or downloaded when online)."""
    try:
        import tensorflow_datasets as tfds

        datasets, info = tfds.load(
            name,
            split=["train", "test"],
            as_supervised=True,
            batch_size=10_000,
            data_dir=str(data_dir) if data_dir else None,
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
        Split(*validate_arrays(x, y, where=f"tfds:{name} {k}", num_classes=label.num_classes,
                               min_classes=2 if k == "train" else 1))
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
    train, test = _split(Split(x, y), 0.2, seed=0, what="the digits test split (0.2)")
    info = DatasetInfo("digits", 10, (8, 8, 1), DIGIT_CLASSES, "sklearn.datasets.load_digits")
    return train, test, info


def _dense_classes(where: str, y_train: np.ndarray, y_test: np.ndarray) -> int:
    """C for labels with no class list: they must be the ids 0..C-1 (C = largest + 1).

    Else the model would get outputs for classes that have no examples.
    """
    occur = np.union1d(y_train, y_test)
    c = int(occur[-1]) + 1
    if len(occur) != c:
        holder = "y_train" if len(y_train) and y_train.max() == occur[-1] else "y_test"
        raise ValueError(
            f"{where}{holder}: label {c - 1} implies {c} classes 0..{c - 1}, but only "
            f"{len(occur)} occur in y_train and y_test ({_ids(occur)}); labels must be the "
            "class ids 0..C-1: remap both splits together, e.g. "
            "`ids, y = np.unique(np.concatenate([y_train, y_test]), return_inverse=True)`"
        )
    return c


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
    pairs = {
        k: validate_arrays(arrays[f"x_{k}"], arrays[f"y_{k}"], where=f"npz:{path} x_{k}/y_{k}",
                           min_classes=2 if k == "train" else 1)
        for k in ("train", "test")
    }
    _check_same_images(f"npz:{path} ", {f"x_{k}": x for k, (x, _) in pairs.items()})
    c = _dense_classes(f"npz:{path} ", pairs["train"][1], pairs["test"][1])
    train, test = (
        Split(x if x.dtype == np.uint8 else x.astype(np.float32), y) for x, y in pairs.values()
    )
    shape = tuple(int(s) for s in train.x.shape[1:])
    info = DatasetInfo(f"npz:{path_text}", c, shape, tuple(map(str, range(c))), str(path))
    return train, test, info


def _take(x: np.ndarray | sources.Images, idx: np.ndarray) -> np.ndarray | sources.Images:
    """``x[idx]`` for an array, a lazy view ``x.subset(idx)`` (nothing loaded) for Images."""
    return x.subset(idx) if is_lazy(x) else x[idx]


def _split(split: Split, size: float | int, seed: int, what: str,
           fix: str = "") -> tuple[Split, Split]:
    """Stratified, seeded split into (rest, held out of ``size``); both keep source order.

    Multi-label targets (N, K) have no single class to stratify on: their split is seeded
    but not stratified. A lazy ``x`` is split into lazy views.

    Args:
        split: the examples to split.
        size: a fraction in (0, 1) or a count of examples to hold out.
        seed: the split's random state.
        what: the field and value being applied, e.g. ``"dataset.val_size=0.1"``.
        fix: what to change when the split is impossible, appended to the message.

    Raises:
        ValueError: naming ``what`` and the class that prevents a stratified split.
    """
    n = len(split)
    held = int(size) if isinstance(size, (int, np.integer)) else math.ceil(size * n)
    stratify, classes = None, 1
    if split.y.ndim == 1:
        stratify, counts = split.y, np.bincount(split.y)
        present = np.flatnonzero(counts)
        classes, rarest = len(present), int(present[np.argmin(counts[present])])
        if counts[rarest] < 2:
            raise ValueError(
                f"{what}: class {rarest} has only 1 example among the {n} to split, and a "
                "stratified split needs 2 or more of every class: add examples of it or drop it"
            )
    if min(held, n - held) < classes:
        raise ValueError(
            f"{what}: a stratified split of {n} examples into {n - held} and {held} needs at "
            f"least one example of each of the {classes} classes on both sides{fix}"
        )
    try:
        rest, held_out = train_test_split(
            np.arange(n), test_size=size, stratify=stratify, random_state=seed
        )
    except ValueError as e:
        raise ValueError(
            f"{what}: no stratified split of {n} examples over {classes} classes ({e})"
        ) from e
    rest, held_out = np.sort(rest), np.sort(held_out)
    return (Split(_take(split.x, rest), split.y[rest]),
            Split(_take(split.x, held_out), split.y[held_out]))


def _val_size(val_size: object, field: str = "dataset.val_size") -> float | int:
    """``dataset.val_size`` (or ``field``) as a fraction in (0, 1) or an int count >= 1.

    A whole float >= 1 is a count: the config field is a float (its default is 0.1), so
    ``--config.dataset.val_size=5000`` arrives as 5000.0.
    """
    bad = ValueError(
        f"{field}={val_size!r}: expected a fraction in (0, 1) or a whole number "
        ">= 1 of training examples (e.g. 0.1 or 5000)"
    )
    if isinstance(val_size, (bool, np.bool_)) or not isinstance(
        val_size, (int, float, np.integer, np.floating)
    ):
        raise bad
    if isinstance(val_size, (int, np.integer)):
        if val_size < 1:
            raise bad
        return int(val_size)
    value = float(val_size)
    if 0 < value < 1:
        return value
    if value >= 1 and value.is_integer():
        return int(value)
    raise bad


def _check_int(field: str, value: object, low: int, high: int | None, meaning: str) -> None:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) \
            or value < low or (high is not None and value >= high):
        bounds = f">= {low}" if high is None else f"in [{low}, {high})"
        raise ValueError(f"{field}={value!r}: expected an integer {bounds} ({meaning})")


def _check_split_fields(val_size: object, seed: object, limit: object) -> float | int:
    """Checks ``dataset.val_size``, ``limit`` and ``seed`` before any data is read."""
    parsed = _val_size(val_size)
    _check_int("dataset.limit", limit, 0, None, "0 = all examples")
    _check_int("dataset.seed", seed, 0, 2**32, "the split's random state")
    return parsed


def load(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    val_size: float | int = 0.1,
    seed: int = 0,
    limit: int = 0,
    image_size: tuple[int, int] | tuple[()] = (),
    color_mode: str = "auto",
    test_size: float | int = 0.2,
) -> Splits:
    """Loads a dataset and splits off a stratified, seeded validation set.

    Args:
        name: ``digits``, ``fashion_mnist``, ``mnist``, ``cifar10``, ``cifar100``,
            ``npz:PATH``, ``folder:PATH`` or ``tfds:NAME[/CONFIG][:TRAIN_SPLIT[:TEST_SPLIT]]``.
        data_dir: where the official files are (or a tfds data dir); None or "" = the default.
        val_size: fraction in (0, 1), or count in [1, n_train) of train held out for
            validation; a whole float such as 5000.0 counts as 5000.
        seed: seed of the validation split and of ``limit``'s subset.
        limit: if > 0, keep a stratified subset of this many training examples (quick runs).
        image_size: ``folder:``/``tfds:`` only: (height, width) every image is resized to;
            () = the first image's size, which every image must then have.
        color_mode: ``folder:``/``tfds:`` only: ``auto`` (the first image's channels; a
            gray/colour mix is refused), ``grayscale`` or ``rgb``.
        test_size: ``folder:`` without ``train/`` and ``test/``, ``tfds:`` without a test
            split: the stratified test fraction (or count), carved with seed 0.

    Returns:
        ``Splits(train, val, test, info)``; train and val are disjoint parts of the source's
        train split, test is the source's test split. ``folder:`` and ``tfds:`` splits hold
        lazy ``sources.Images``.

    Raises:
        ValueError: unknown name, missing files, bad arrays, a test class absent from the
            train split, or bad ``val_size``/``seed``/``limit``/``image_size``/...
    """
    requested, val_size = val_size, _check_split_fields(val_size, seed, limit)
    if not isinstance(name, str):
        name = repr(name)
    lazy_options = dict(image_size=image_size, color_mode=color_mode)
    if name == "digits":
        train, test, info = _digits()
    elif name in ("fashion_mnist", "mnist"):
        train, test, info = _idx_dataset(name, data_dir)
    elif name in _CIFAR_CLASSES:
        train, test, info = _cifar(name, data_dir)
    elif name.startswith("npz:") and len(name) > 4:
        train, test, info = _npz(name[4:])
    elif name.startswith("folder:") and len(name) > 7:
        train, test, info = _lazy_source(name, readers.folder(name[7:], **lazy_options),
                                         test_size)
    elif name.startswith("tfds:") and len(name) > 5:
        source = readers.tfds_source(name[5:], data_dir=data_dir or None, **lazy_options)
        train, test, info = _lazy_source(name, source, test_size)
    else:
        raise ValueError(f"dataset.name={name!r} is not a dataset; valid names: {', '.join(NAMES)}")
    names = ("y_train", "y_test") if name.startswith("npz:") else ("train split", "test split")
    return _finish(train, test, info, requested, val_size, seed, limit, names)


def _finish(train: Split, test: Split, info: DatasetInfo, requested: object,
            val_size: float | int, seed: int, limit: int, names: tuple[str, str]) -> Splits:
    """Checks the classes, then carves validation (and ``limit``'s subset) out of train."""
    # Labels before any split, so that a bad label is blamed, not val_size or limit.
    _check_classes(f"{info.name} ", (names[0], train.y), {names[1]: test.y}, info.num_classes)
    if isinstance(val_size, int) and val_size >= len(train):
        raise ValueError(
            f"dataset.val_size={requested!r}: a count must be in [1, {len(train)}) "
            f"for the {len(train)} training examples of {info.name}"
        )
    train, val = _split(
        train, val_size, seed, f"dataset.val_size={requested!r}",
        "; use a larger or smaller dataset.val_size (a fraction in (0, 1) or a count)",
    )
    if 0 < limit < len(train):
        _, train = _split(train, limit, seed, f"dataset.limit={limit!r}",
                          f"; use dataset.limit=0 (all) or >= {info.num_classes}")
    return Splits(train, val, test, info)


def _carve_test(train: Split, test_size: object, field: str) -> tuple[Split, Split]:
    """(train, test): a stratified test split of ``test_size``, seed 0 (module docstring)."""
    size = _val_size(test_size, field)
    if isinstance(size, int) and size >= len(train):
        raise ValueError(f"{field}={test_size!r}: a count must be in [1, {len(train)}) for "
                         f"the {len(train)} examples")
    return _split(train, size, 0, f"{field}={test_size!r}",
                  f"; use a larger or smaller {field} (a fraction in (0, 1) or a count)")


def _lazy_source(name: str, source: readers.Source, test_size: object
                 ) -> tuple[Split, Split, DatasetInfo]:
    """Checks a lazy source's splits (shapes, labels) and carves its test split if needed."""
    c = len(source.class_names)
    pairs = {
        k: Split(*validate_arrays(x, y, where=f"{name} {k}", num_classes=c,
                                  min_classes=2 if k == "train" else 1))
        for k, (x, y) in source.splits.items()
    }
    train = pairs["train"]
    test = pairs.get("test")
    if test is None:
        train, test = _carve_test(train, test_size, "dataset.test_size")
    _check_same_images(f"{name} ", {"train": train.x, "test": test.x})
    shape = tuple(int(d) for d in train.x.shape[1:])
    return train, test, DatasetInfo(name, c, shape, source.class_names, source.source)


def _check_info(info: object) -> DatasetInfo:
    if not isinstance(info, DatasetInfo):
        raise ValueError(f"splits.info: expected a recipes.data.DatasetInfo, got {info!r}")
    c = info.num_classes
    if isinstance(c, (bool, np.bool_)) or not isinstance(c, (int, np.integer)) or c < 2:
        raise ValueError(
            f"splits.info.num_classes={c!r}: expected an integer >= 2 (the model's outputs)"
        )
    if len(info.class_names) != c:
        raise ValueError(
            f"splits.info.class_names has {len(info.class_names)} names for num_classes={c}; "
            "give one name per class, e.g. tuple(map(str, range(num_classes)))"
        )
    return info


def validate_splits(splits: Splits) -> Splits:
    """Checks splits built by hand (``recipes.train.run(splits=...)``) as ``load`` checks its own.

    Each split goes through `validate_arrays` (labels within ``info.num_classes``, a 0/1
    matrix when ``info.multilabel``; a lazy ``x`` by shape and dtype); then every split must
    share the train images' shape and dtype convention, and every class of val and test must
    occur in train (a train class missing from val or test only warns).

    Raises:
        ValueError: naming the split and the problem (NaN pixels, labels out of range, ...).
    """
    if not isinstance(splits, Splits):
        raise ValueError(
            f"splits: expected recipes.data.Splits(train, val, test, info), got "
            f"{type(splits).__name__}"
        )
    info = _check_info(splits.info)
    out = {}
    for k in ("train", "val", "test"):
        split = getattr(splits, k)
        if not isinstance(split, Split):
            raise ValueError(f"splits.{k}: expected a recipes.data.Split(x, y), got {split!r}")
        size = len(split.x) if is_lazy(split.x) else np.size(split.x)
        if k != "train" and size == 0 and np.size(split.y) == 0:
            out[k] = split  # an empty val or test split is allowed
            continue
        x, y = validate_arrays(split.x, split.y, where=f"splits.{k}",
                               num_classes=info.num_classes,
                               min_classes=2 if k == "train" else 1,
                               multilabel=bool(info.multilabel))
        out[k] = split if x is split.x and y is split.y else Split(x, y)
    used = [k for k in ("train", "val", "test") if np.size(out[k].y)]
    _check_same_images("", {f"splits.{k}": out[k].x for k in used})
    shape = tuple(out["train"].x.shape[1:])
    if tuple(info.input_shape) != shape:
        raise ValueError(
            f"splits.info.input_shape={tuple(info.input_shape)} but splits.train images are "
            f"{shape}; set it to {shape}"
        )
    _check_classes("", ("splits.train", out["train"].y),
                   {f"splits.{k}": out[k].y for k in used if k != "train"}, info.num_classes)
    return Splits(info=info, **out)


USER_FORMS = (
    "(x_train, y_train), (x_train, y_train, x_test, y_test), (train_ds, test_ds) of "
    "tf.data.Dataset yielding (x, y), or recipes.data.Splits"
)
LABEL_FORMS = (
    "integer class ids (N,), 0/1 ids (N,) for a binary problem, one-hot (N, C), or a 0/1 "
    "multi-label matrix (N, K)"
)


def _label_form(y: object, where: str) -> tuple[np.ndarray, bool, int | None]:
    """``(labels, multilabel, width)`` of one split's labels as the user gave them.

    One-hot rows become ids (width C); other bad forms pass through unchanged for
    `validate_arrays` to name.

    Raises:
        ValueError: continuous targets (regression) or a (N, K) matrix that is not 0/1.
    """
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.dtype == np.bool_ or not np.issubdtype(y.dtype, np.number) or y.ndim not in (1, 2):
        return y, False, None  # validate_arrays names the dtype or the shape
    if np.issubdtype(y.dtype, np.floating) and not (np.isfinite(y).all()
                                                    and (y == np.round(y)).all()):
        bad = y[~(np.isfinite(y) & (y == np.round(y)))].flat[0]
        raise ValueError(f"{where}: labels hold non-integer values (e.g. {bad:.4g}): "
                         "regression (continuous targets) is not supported; give "
                         f"{LABEL_FORMS}")
    if y.ndim == 1:
        return y, False, None
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"{where}: (N, K) labels hold values other than 0 and 1; give "
                         f"{LABEL_FORMS}")
    if len(y) and (y.sum(axis=1) == 1).all():
        return y.argmax(axis=1).astype(np.int64), False, y.shape[1]
    return y.astype(np.float32), True, y.shape[1]


def _user_labels(labels: dict[str, object], where: str
                 ) -> tuple[dict[str, np.ndarray], int, bool]:
    """Each split's labels as ids or a multi-label matrix, the class count and the kind."""
    forms = {k: _label_form(y, f"{where} {k}") for k, y in labels.items()}
    kinds = {multilabel for _, multilabel, _ in forms.values()}
    if len(kinds) > 1:
        raise ValueError(f"{where}: {', '.join(k for k, f in forms.items() if f[1])} is a "
                         "multi-label matrix but the other split's labels are not; give both "
                         "splits the same form")
    widths = [w for _, _, w in forms.values() if w is not None]
    if kinds == {True}:
        if len(set(widths)) > 1:
            raise ValueError(f"{where}: the splits have {widths} label columns; give both K")
        return {k: f[0] for k, f in forms.items()}, widths[0], True
    ids = [f[0] for f in forms.values() if f[0].ndim == 1 and f[0].size
           and np.issubdtype(f[0].dtype, np.number)]
    top = [int(min(np.max(y), np.iinfo(np.int64).max)) + 1 for y in ids]
    c = max([*widths, *top, 2])
    return {k: f[0] for k, f in forms.items()}, c, False


def _user_parts(data: object, name: str) -> tuple[dict[str, tuple[object, object]], str]:
    """``{"train": (x, y)[, "test": (x, y)]}`` and what the user gave, from any user form."""
    if not isinstance(data, (tuple, list)) or len(data) not in (2, 4):
        got = f"a {type(data).__name__}" + (f" of {len(data)}" if isinstance(data, (tuple, list))
                                            else "")
        raise ValueError(f"{name}: expected {USER_FORMS}; got {got}")
    datasets = [isinstance(d, tf.data.Dataset) for d in data]
    if len(data) == 2 and all(datasets):
        parts = {k: sources.from_dataset(d, f"{name} {k} dataset")
                 for k, d in zip(("train", "test"), data)}
        return parts, "tf.data"
    if any(datasets):
        raise ValueError(f"{name}: tf.data datasets come as a pair (train_ds, test_ds), each "
                         f"yielding (x, y); expected {USER_FORMS}")
    if len(data) == 2:
        return {"train": (data[0], data[1])}, "arrays"
    return {"train": (data[0], data[1]), "test": (data[2], data[3])}, "arrays"


def _pixels(x: np.ndarray | sources.Images) -> np.ndarray | sources.Images:
    """The pixel convention: lazy and uint8 stay, other arrays become float32."""
    return x if is_lazy(x) or x.dtype == np.uint8 else x.astype(np.float32, copy=False)


def from_user(data: object, *, val_size: float | int = 0.1, seed: int = 0, limit: int = 0,
              test_size: float | int = 0.2, name: str = "data") -> Splits:
    """The user's own data as ``Splits``, through the checks every source goes through.

    Forms: ``(x_train, y_train)`` (a stratified test split of ``test_size`` is carved with
    seed 0), ``(x_train, y_train, x_test, y_test)``, ``(train_ds, test_ds)`` of
    ``tf.data.Dataset`` yielding ``(x, y)`` (kept lazy, see ``sources.from_dataset`` for the
    batching rule; the labels are read in one pass), or ``Splits`` (``validate_splits``).
    Inputs: images (N, H, W[, C]) or vectors (N, D) (``DatasetInfo.input_shape`` (D,)).
    Labels: integer ids (N,); one-hot (N, C) (converted to ids); 0/1 ids (N,) (two classes,
    a binary problem); a 0/1 matrix (N, K) whose rows do not all sum to 1 is multi-label
    (kept as float32, ``DatasetInfo.multilabel`` True, ``num_classes`` K; its splits are
    seeded, not stratified). Classes: the one-hot width, else the ids that occur, which must be
    0..C-1 (as for ``npz:``).

    Args:
        data: one of the forms above.
        val_size: validation carved from train (``dataset.val_size``), stratified, seeded.
        seed: the validation split's (and ``limit``'s) random state.
        limit: if > 0, keep a stratified subset of this many training examples.
        test_size: the test fraction (or count) carved from ``(x_train, y_train)``.
        name: ``DatasetInfo.name``, and the prefix of every message.

    Returns:
        ``Splits(train, val, test, info)``; a lazy ``x`` stays lazy (views, nothing loaded).

    Raises:
        ValueError: an unknown form, continuous targets (regression is not supported),
            bad shapes or values, naming the part and the fix.
    """
    if isinstance(data, Splits):
        return validate_splits(data)
    requested, parsed = val_size, _check_split_fields(val_size, seed, limit)
    parts, given = _user_parts(data, name)
    labels, c, multilabel = _user_labels({f"y_{k}": y for k, (_, y) in parts.items()}, name)
    splits = {}
    for k, (x, _) in parts.items():
        x, y = validate_arrays(x, labels[f"y_{k}"], where=f"{name} x_{k}/y_{k}", num_classes=c,
                               min_classes=2 if k == "train" else 1, multilabel=multilabel)
        splits[k] = Split(_pixels(x), y)
    one_hot = any(np.ndim(y) == 2 and np.shape(y)[1] > 1 for _, y in parts.values())
    if not multilabel and not one_hot:  # one-hot: its width is C, a class may be absent
        c = _dense_classes(f"{name} ", splits["train"].y,
                           splits["test"].y if "test" in splits else splits["train"].y[:0])
    train, test = splits["train"], splits.get("test")
    if test is None:
        train, test = _carve_test(train, test_size, "test_size")
    _check_same_images(f"{name} ", {"x_train": train.x, "x_test": test.x})
    shape = tuple(int(d) for d in train.x.shape[1:])
    info = DatasetInfo(name, c, shape, tuple(map(str, range(c))), f"user {given}", multilabel)
    return _finish(train, test, info, requested, parsed, seed, limit, ("y_train", "y_test"))
