"""Lazy examples: images (or vectors) that stay in files or in a stream until they are read.

``Images`` stands for N examples of one shape and dtype, read on demand, never all in memory:
``len(x)``, ``x.shape``, ``x.dtype`` and ``x.ndim`` as for an array; ``x[i]``, ``x[a:b]`` and
``x[index_array]`` load those examples only (a numpy array); ``x.subset(idx)`` is a lazy view;
``x.dataset(order=None)`` is a ``tf.data.Dataset`` of single examples and ``x.batches(n)`` a
streamed pass of numpy batches (statistics). Two kinds:

* ``FileImages`` (``folder:PATH``): a list of image files, decoded by TensorFlow
  (``tf.io.decode_image``) when read; random access is cheap, so a pipeline shuffles the
  index order and reads the files in that order.
* ``StreamImages`` (``tfds:NAME``, a user's ``tf.data``): the examples of a dataset that can
  only be read front to back. Random access is one ``enumerate().filter()`` pass over the
  stream (O(N) per access, stopping after the last index asked for): code only reads small
  subsets that way. ``dataset(order)`` cannot reorder a stream and raises; the pipeline
  shuffles it within bounded blocks instead (:func:`shuffle_buffer`). The stream must yield the
  same examples in the same order on every pass (tfds with ``shuffle_files=False`` does;
  a user's dataset must not reshuffle itself).

Pixel convention (as ``recipes.data``): 8-bit images stay ``uint8``, everything else becomes
``float32``. A file resized to ``dataset.image_size`` (bilinear, ``tf.image.resize``) is
rounded back to ``uint8``, so every example of a source has one dtype whichever files needed
resizing (the rounding, at most 0.5/255, is far below what bilinear smoothing changes).

What is hand-written and why (DESIGN.md "library first"): decoding, channel conversion and
resizing are TensorFlow's; ``keras.utils.image_dataset_from_directory`` is not used because
it returns batches with no random access and no lazy subsets (validation split, ``limit``),
so the file and class bookkeeping is done here, as the design table allows. The header probe
(:func:`probe`) is hand-written so that every file is checked when the folder is listed
without decoding it: magic bytes, size and channels from the header, and the end marker
(truncation), two small reads per file. A file that passes and still fails to decode gives a
``ValueError`` naming it when read through ``x[...]`` or ``x.batches()`` (the first pass over
the training split is ``preprocessing.fit``'s); inside a running ``fit`` TensorFlow's own
``InvalidArgumentError`` surfaces, as graph code cannot catch it.

Layer 2: imports numpy and tensorflow (tensorflow_datasets lazily), nothing from ``recipes``.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")  # any case, like Keras' list
COLOR_MODES = ("auto", "grayscale", "rgb")
SHUFFLE_BUFFER = 10_000  # most examples a stream's shuffle buffer holds ...
SHUFFLE_BUFFER_BYTES = 256 << 20  # ... and most bytes: min(N, 10_000, 256 MiB / example)
_AUTOTUNE = tf.data.AUTOTUNE
_TAIL = 1024  # bytes read at a file's end to find its end marker
_PNG = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}  # colour type -> channels decode_image gives
_BMP_CHANNELS = {8: 1, 24: 3, 32: 4}  # bits per pixel TensorFlow's BMP decoder reads


def is_lazy(x: Any) -> bool:
    """Whether ``x`` is lazy ``Images`` (read on demand) rather than an array."""
    return isinstance(x, Images)


def _positions(key: Any, n: int) -> tuple[np.ndarray, bool]:
    """``x[key]``'s positions in [0, n) and whether the key was one integer (drop the axis)."""
    if isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_)):
        i = int(key) + (n if key < 0 else 0)
        if not 0 <= i < n:
            raise IndexError(f"index {int(key)} is out of range for {n} examples")
        return np.array([i]), True
    if isinstance(key, slice):
        return np.arange(n)[key], False
    idx = np.asarray(key)
    if idx.dtype == np.bool_:
        if idx.shape != (n,):
            raise IndexError(f"boolean index of shape {idx.shape} for {n} examples")
        return np.flatnonzero(idx), False
    if idx.ndim != 1 or not (idx.size == 0 or np.issubdtype(idx.dtype, np.integer)):
        raise IndexError(f"lazy examples take an int, a slice or a 1-D integer array, got {key!r}")
    idx = idx.astype(np.int64)
    idx = np.where(idx < 0, idx + n, idx)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise IndexError(f"indices out of range for {n} examples")
    return idx, False


class Images:
    """N examples of one shape and dtype, read on demand (see the module docstring).

    Attributes:
        example_shape: one example's shape, ``(H, W, C)`` for images or ``(D,)`` for vectors.
        dtype: ``np.uint8`` for 8-bit images, else ``np.float32``.
        random_access: whether ``dataset(order)`` can read in any order (files: True).
    """

    random_access = True

    def __init__(self, example_shape: Sequence[int], dtype: Any):
        self.example_shape = tuple(int(d) for d in example_shape)
        self.dtype = np.dtype(dtype)

    def __len__(self) -> int:
        raise NotImplementedError

    @property
    def shape(self) -> tuple[int, ...]:
        """``(N, *example_shape)``, like an array's."""
        return (len(self), *self.example_shape)

    @property
    def ndim(self) -> int:
        """``1 + len(example_shape)``, like an array's."""
        return 1 + len(self.example_shape)

    @property
    def nbytes(self) -> int:
        """What the examples would take loaded as one array (they never are)."""
        return int(np.prod(self.shape)) * self.dtype.itemsize

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.dtype}{list(self.shape)}, lazy)"

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        """Refuses ``np.asarray(x)``: it would load every example (the lazy source's point)."""
        raise TypeError(f"{self!r} is read on demand: np.asarray would load every example; "
                        "load a part with x[a:b] or x[indices], or stream it with "
                        "x.batches(n) / x.dataset()")

    def __getitem__(self, key: Any) -> np.ndarray:
        """The examples ``key`` selects, loaded: one example for an int, else a batch."""
        positions, scalar = _positions(key, len(self))
        out = self._load(positions)
        return out[0] if scalar else out

    def subset(self, indices: Any) -> Images:
        """A lazy view of the examples at ``indices`` (positions in this view); reads nothing."""
        raise NotImplementedError

    def dataset(self, order: Any = None) -> tf.data.Dataset:
        """A ``tf.data.Dataset`` of single examples (dtype ``self.dtype``, static shape).

        Args:
            order: optional int64 indices into this view (array or tensor, possibly symbolic
                inside a ``tf.data`` function) giving the order to read them in.
        """
        raise NotImplementedError

    def batches(self, batch_size: int = 256) -> Iterator[np.ndarray]:
        """One streamed pass: numpy batches of at most ``batch_size`` examples, in order."""
        iterator, start = iter(self.dataset().batch(int(batch_size)).prefetch(1)), 0
        while True:
            try:
                batch = next(iterator)
            except StopIteration:
                return
            except tf.errors.OpError as e:
                self._read_error(np.arange(start, min(start + batch_size, len(self))), e)
            start += len(batch)
            yield batch.numpy()

    def _load(self, positions: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _read_error(self, positions: np.ndarray, error: tf.errors.OpError) -> None:
        """Raises a ``ValueError`` for a failed read of the examples at ``positions``."""
        first = positions[0] if len(positions) else 0
        raise ValueError(f"{self!r}: reading examples from {first} failed "
                         f"({_first_line(error)})") from error


def _first_line(error: Exception) -> str:
    """An error's message on one line, without TensorFlow's ``{{function_node ...}}`` tags."""
    text = getattr(error, "message", None) or str(error)
    text = re.sub(r"\{\{[^}]*\}\}|\[Op:[^\]]*\]( name:)?", "", text)
    return " ".join(text.split())[:300]


# --- files -------------------------------------------------------------------------------


def convert_image(image: tf.Tensor, channels: int, size: tuple[int, int] | None) -> tf.Tensor:
    """One decoded image to ``channels`` channels and, if ``size``, to ``size`` (graph code).

    1 channel: RGB(A) goes through ``tf.image.rgb_to_grayscale``, gray(+alpha) keeps its gray
    plane; 3 channels: alpha is dropped, gray is repeated. A resize (bilinear) happens only
    when the image is not already ``size``; a resized ``uint8`` image is rounded back to
    ``uint8`` (module docstring), other dtypes keep theirs.
    """
    have = image.shape[-1]
    if channels == 1 and have != 1:
        image = tf.cond(tf.shape(image)[-1] >= 3,
                        lambda: tf.image.rgb_to_grayscale(image[..., :3]),
                        lambda: image[..., :1])
    elif channels == 3 and have != 3:
        image = tf.cond(tf.shape(image)[-1] >= 3, lambda: image[..., :3],
                        lambda: tf.image.grayscale_to_rgb(image[..., :1]))
    elif channels not in (1, 3) and have != channels:
        image = image[..., :channels]
    image.set_shape([None, None, channels])
    if not size:
        return image

    def resized():
        out = tf.image.resize(image, size, method="bilinear")
        if image.dtype == tf.uint8:
            return tf.cast(tf.clip_by_value(tf.round(out), 0.0, 255.0), tf.uint8)
        return tf.cast(out, image.dtype)

    same = tf.reduce_all(tf.equal(tf.shape(image)[:2], tf.constant(size)))
    return tf.ensure_shape(tf.cond(same, lambda: image, resized), (*size, channels))


class FileImages(Images):
    """Images in files, decoded with ``tf.io.decode_image`` when read (always ``uint8``).

    Args:
        paths: every file of the source (a view selects some with ``indices``).
        size: the (height, width) every image is read at (resized when it differs).
        channels: 1 (grayscale) or 3 (RGB).
        indices: positions in ``paths`` of this view's examples, in order; None = all.
    """

    random_access = True

    def __init__(self, paths: Sequence[str], size: tuple[int, int], channels: int,
                 indices: np.ndarray | None = None):
        super().__init__((*size, channels), np.uint8)
        self.paths = np.asarray([os.fspath(p) for p in paths], dtype=str)
        self.size, self.channels = (int(size[0]), int(size[1])), int(channels)
        self.indices = np.arange(len(self.paths)) if indices is None else np.asarray(indices)
        self._tensors: tuple[tf.Tensor, tf.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.indices)

    def files(self) -> np.ndarray:
        """The paths of this view's examples, in order."""
        return self.paths[self.indices]

    def subset(self, indices: Any) -> FileImages:
        positions, _ = _positions(indices, len(self))
        return FileImages(self.paths, self.size, self.channels, self.indices[positions])

    def read(self, path: tf.Tensor) -> tf.Tensor:
        """One file's image, ``uint8`` of ``example_shape`` (graph code, for ``map``)."""
        raw = tf.io.read_file(path)
        image = tf.io.decode_image(raw, channels=3 if self.channels == 3 else 0,
                                   expand_animations=False)
        return convert_image(image, self.channels, self.size)

    def dataset(self, order: Any = None) -> tf.data.Dataset:
        if self._tensors is None:
            with tf.init_scope():  # eager constants, captured by every graph that reads
                self._tensors = (tf.constant(self.paths), tf.constant(self.indices, tf.int64))
        paths, indices = self._tensors
        if order is not None:
            indices = tf.gather(indices, tf.cast(order, tf.int64))
        names = tf.data.Dataset.from_tensor_slices(tf.gather(paths, indices))
        return names.map(self.read, num_parallel_calls=_AUTOTUNE, deterministic=True)

    def _load(self, positions: np.ndarray) -> np.ndarray:
        if not len(positions):
            return np.zeros((0, *self.example_shape), np.uint8)
        try:
            return self.dataset(order=positions).batch(len(positions)).get_single_element().numpy()
        except tf.errors.OpError as e:
            self._read_error(positions, e)

    def _read_error(self, positions: np.ndarray, error: tf.errors.OpError) -> None:
        for path in self.paths[self.indices[positions]]:  # find the file that fails
            try:
                self.read(tf.constant(path))
            except tf.errors.OpError as e:
                raise ValueError(
                    f"{path}: cannot be decoded as an image ({_first_line(e)}); the file is "
                    "corrupt or not an image: replace or delete it") from error
        super()._read_error(positions, error)


@dataclasses.dataclass(frozen=True)
class Header:
    """What a file's header says: format, size and the channels ``decode_image`` gives."""

    format: str
    height: int
    width: int
    channels: int

    @property
    def gray(self) -> bool:
        """1 or 2 channels (gray, gray + alpha)."""
        return self.channels <= 2


def _int(raw: bytes, order: str = "big", signed: bool = False) -> int:
    return int.from_bytes(raw, order, signed=signed)


def _jpeg_frame(f: Any) -> tuple[int, int, int] | None:
    """(height, width, components) of a JPEG's frame header (SOFn), walking its segments."""
    pos = 2
    while True:
        f.seek(pos)
        head = f.read(4)
        if len(head) < 4 or head[0] != 0xFF:
            return None
        marker = head[1]
        if marker == 0xFF:  # fill byte
            pos += 1
        elif marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
        elif 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            frame = f.read(6)  # precision, height (2), width (2), components
            return (_int(frame[1:3]), _int(frame[3:5]), frame[5]) if len(frame) == 6 else None
        elif marker in (0xD9, 0xDA):  # end of image, or a scan before any frame header
            return None
        else:
            pos += 2 + _int(head[2:4])


def _header(f: Any, head: bytes, file_size: int) -> tuple[str, int, int, int, bool]:
    """(format, height, width, channels, whole) from the first bytes and the tail."""
    f.seek(max(0, file_size - _TAIL))
    tail = f.read()
    if head.startswith(_PNG) and head[12:16] == b"IHDR":
        return ("PNG", _int(head[20:24]), _int(head[16:20]), _PNG_CHANNELS.get(head[25], 0),
                b"IEND" in tail[-12:])
    if head.startswith(b"\xff\xd8"):
        frame = _jpeg_frame(f) or (0, 0, 0)
        return ("JPEG", frame[0], frame[1], frame[2] if frame[2] in (1, 3, 4) else 0,
                b"\xff\xd9" in tail)
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return ("GIF", _int(head[8:10], "little"), _int(head[6:8], "little"), 3,
                tail.rstrip(b"\x00")[-1:] == b";")
    if head.startswith(b"BM") and len(head) >= 30:
        if _int(head[14:18], "little") == 12:  # OS/2 header: 16-bit sizes
            h, w, bits = (_int(head[20:22], "little"), _int(head[18:20], "little"),
                          _int(head[24:26], "little"))
        else:
            h, w = abs(_int(head[22:26], "little", True)), _int(head[18:22], "little", True)
            bits = _int(head[28:30], "little")
        return "BMP", h, w, _BMP_CHANNELS.get(bits, 0), file_size >= _int(head[2:6], "little")
    raise ValueError(f"not a PNG, JPEG, BMP or GIF image (it starts with {head[:8]!r})")


def probe(path: str | os.PathLike) -> Header:
    """Reads a file's header and end marker (no decoding): its format, size and channels.

    Raises:
        ValueError: naming the file when it cannot be read, is empty, is no PNG/JPEG/BMP/GIF,
            has a damaged header, a layout TensorFlow cannot decode, or no end marker
            (truncated).
    """
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(32)
            if not head:
                raise ValueError("the file is empty")
            fmt, h, w, c, whole = _header(f, head, size)
    except OSError as e:
        raise ValueError(f"{path}: cannot be read ({e}); fix its permissions or delete it"
                         ) from e
    except ValueError as e:
        raise ValueError(f"{path}: {e}; replace or delete it") from None
    if h < 1 or w < 1 or c < 1:
        raise ValueError(f"{path}: damaged or unsupported {fmt} header (size {h}x{w}, "
                         f"{c or 'unknown'} channels); re-save it as an 8-bit PNG or JPEG")
    if not whole:
        raise ValueError(f"{path}: truncated {fmt} (its end marker is missing); the file is "
                         "damaged: replace or delete it")
    return Header(fmt, h, w, c)


# --- streams -----------------------------------------------------------------------------


class StreamImages(Images):
    """The examples of a ``tf.data`` stream, read front to back (see the module docstring).

    Args:
        source: a dataset of raw single examples (e.g. undecoded image bytes).
        length: the number of examples in ``source``.
        example_shape, dtype: what ``convert`` makes of one raw example.
        convert: raw example -> example tensor (graph code), applied after the selection,
            so examples outside a view are never decoded. None = identity.
        indices: strictly increasing positions in ``source`` of this view's examples.
    """

    random_access = False

    def __init__(self, source: tf.data.Dataset, length: int, example_shape: Sequence[int],
                 dtype: Any, convert: Callable | None = None, indices: np.ndarray | None = None):
        super().__init__(example_shape, dtype)
        self.source, self.length, self.convert = source, int(length), convert
        self.indices = None if indices is None else np.asarray(indices, np.int64)

    def __len__(self) -> int:
        return self.length if self.indices is None else len(self.indices)

    def _base(self, positions: np.ndarray) -> np.ndarray:
        return positions if self.indices is None else self.indices[positions]

    def subset(self, indices: Any) -> StreamImages:
        positions, _ = _positions(indices, len(self))
        if np.any(np.diff(positions) <= 0):
            raise ValueError("a stream's subset needs strictly increasing indices (a stream "
                             "is read front to back): sort them, e.g. np.sort(idx)")
        return StreamImages(self.source, self.length, self.example_shape, self.dtype,
                            self.convert, self._base(positions))

    def _select(self, base: np.ndarray) -> tf.data.Dataset:
        """The raw examples at the sorted positions ``base``: one pass, stopping after the last."""
        with tf.init_scope():
            mask = np.zeros(int(base[-1]) + 1 if len(base) else 0, bool)
            mask[base] = True
            mask_t = tf.constant(mask)
        ds = self.source.take(len(mask)).enumerate()
        ds = ds.filter(lambda i, _: tf.gather(mask_t, i))
        return ds.map(lambda _, example: example)

    def _converted(self, ds: tf.data.Dataset) -> tf.data.Dataset:
        if self.convert is None:
            return ds
        return ds.map(self.convert, num_parallel_calls=_AUTOTUNE, deterministic=True)

    def dataset(self, order: Any = None) -> tf.data.Dataset:
        if order is not None:
            raise ValueError("a stream-backed source cannot be read in another order (it is "
                             "read front to back); shuffle it with a bounded buffer "
                             "(recipes.sources.shuffle_buffer) instead")
        ds = self.source if self.indices is None else self._select(self.indices)
        return self._converted(ds)

    def _load(self, positions: np.ndarray) -> np.ndarray:
        base = self._base(positions)
        unique = np.unique(base)
        if not len(unique):
            return np.zeros((0, *self.example_shape), self.dtype)
        try:
            ds = self._converted(self._select(unique)).batch(len(unique))
            loaded = ds.get_single_element().numpy()
        except tf.errors.OpError as e:
            self._read_error(positions, e)
        return loaded[np.searchsorted(unique, base)]


def shuffle_buffer(x: Images) -> int:
    """Examples of a stream's shuffle buffer: ``min(N, 10_000, 256 MiB / example bytes)``.

    ``recipes.pipeline`` permutes consecutive blocks of this many examples: not a perfect
    shuffle when it is smaller than N (an example stays within its block).
    """
    per_example = max(1, int(np.prod(x.example_shape)) * x.dtype.itemsize)
    return max(1, min(len(x), SHUFFLE_BUFFER, SHUFFLE_BUFFER_BYTES // per_example))


def _cast(dtype: np.dtype, add_channel: bool) -> Callable:
    def convert(example):
        example = tf.cast(example, tf.as_dtype(dtype))
        return example[..., None] if add_channel else example
    return convert


def _is_batched(spec_x: tf.TensorSpec, spec_y: tf.TensorSpec) -> bool:
    """The batching rule of `from_dataset` (see there)."""
    if spec_y.shape.rank == 2 or spec_x.shape.rank == 4:
        return True
    return spec_y.shape.rank == 1 and spec_y.shape[0] is None


def from_dataset(ds: tf.data.Dataset, where: str) -> tuple[StreamImages, np.ndarray]:
    """A user's ``tf.data`` of ``(x, y)`` pairs as lazy examples and their labels (numpy).

    Batched datasets are unbatched. The rule: a dataset is batched when its labels are rank
    2 (a batch of one-hot rows), its inputs rank 4 (a batch of NHWC images), or its labels
    rank 1 with an unknown length (what ``Dataset.batch`` without ``drop_remainder`` gives).
    Batches of (N, H, W) gray images or (N, D) vectors with integer ids made with
    ``drop_remainder=True`` cannot be told from one example: ``unbatch()`` them first.
    The labels are read in one pass (the inputs are produced and dropped); the inputs stay
    lazy. Inputs: (H, W) gray images (a channel axis is added), (H, W, C) images or (D,)
    vectors, with a static shape; ``uint8`` stays, other dtypes become ``float32``.

    Raises:
        ValueError: naming ``where``: not (x, y) pairs, no static shape, a bad dtype.
    """
    spec = ds.element_spec
    if not (isinstance(spec, tuple) and len(spec) == 2
            and all(isinstance(s, tf.TensorSpec) for s in spec)):
        raise ValueError(f"{where}: the dataset yields {spec}; expected (x, y) pairs of tensors")
    if _is_batched(*spec):
        ds = ds.unbatch()
        spec = ds.element_spec
    x_spec = spec[0]
    if not x_spec.shape.is_fully_defined() or not 1 <= x_spec.shape.rank <= 3:
        raise ValueError(
            f"{where}: inputs have shape {x_spec.shape}; expected a static (D,), (H, W) or "
            "(H, W, C) shape per example, e.g. ds.map(lambda x, y: (tf.ensure_shape(x, "
            "(H, W, C)), y)) (resize images of varying size first)")
    if not (x_spec.dtype.is_integer or x_spec.dtype.is_floating):
        raise ValueError(f"{where}: inputs have dtype {x_spec.dtype.name}; expected numbers "
                         "(decode strings into pixel arrays first)")
    labels = [b.numpy() for b in ds.map(lambda _, y: y).batch(65536)]
    y = np.concatenate(labels) if labels else np.zeros((0,), np.int64)
    dtype = np.uint8 if x_spec.dtype == tf.uint8 else np.float32
    shape, rank2 = tuple(x_spec.shape), x_spec.shape.rank == 2
    example_shape = (*shape, 1) if rank2 else shape
    x = StreamImages(ds.map(lambda x, _: x), len(y), example_shape, dtype, _cast(dtype, rank2))
    return x, y


# --- sources: folder and tfds ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Source:
    """A lazy source: ``splits`` maps "train" (and "test" if it has one) to (x, labels)."""

    splits: dict[str, tuple[Images, np.ndarray]]
    class_names: tuple[str, ...]
    source: str


def check_image_options(image_size: Any, color_mode: Any) -> tuple[tuple[int, int] | None, str]:
    """``dataset.image_size`` as (H, W) or None (= the first image's), and ``color_mode``.

    Raises:
        ValueError: naming the field, its value and what it takes.
    """
    if color_mode not in COLOR_MODES:
        raise ValueError(f"dataset.color_mode={color_mode!r}: expected one of "
                         f"{', '.join(COLOR_MODES)}")
    if image_size is None or (isinstance(image_size, (tuple, list)) and not image_size):
        return None, color_mode
    ok = isinstance(image_size, (tuple, list)) and len(image_size) == 2 and all(
        isinstance(s, (int, np.integer)) and not isinstance(s, (bool, np.bool_)) and s >= 1
        for s in image_size)
    if not ok:
        raise ValueError(f"dataset.image_size={image_size!r}: expected (height, width) in "
                         "pixels, e.g. (64, 64), or () for the first image's size")
    return (int(image_size[0]), int(image_size[1])), color_mode


def _listing(where: str, directory: Path) -> tuple[list[str], list[list[str]]]:
    """Class folders of ``directory`` (sorted) and each one's image files (sorted, recursive)."""
    entries = sorted(os.scandir(directory), key=lambda e: e.name)
    classes = [e.name for e in entries if e.is_dir() and not e.name.startswith(".")]
    if not classes:
        loose = sum(e.name.lower().endswith(IMAGE_EXTENSIONS) for e in entries)
        found = f"it holds {loose} images but no sub-folders" if loose else (
            f"it holds {', '.join(e.name for e in entries[:6]) or 'nothing'}")
        raise ValueError(
            f"{where}: {directory} has no class sub-folders ({found}); expected one "
            f"sub-folder of images per class, {directory}/CLASS/IMAGE.png (the layout of "
            "keras.utils.image_dataset_from_directory)")
    files = []
    for name in classes:
        found = sorted(
            os.path.join(root, f)
            for root, _, names in os.walk(directory / name, followlinks=True)
            for f in names if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith("."))
        if not found:
            raise ValueError(
                f"{where}: class folder {directory / name} holds no images "
                f"({', '.join(IMAGE_EXTENSIONS)}, any case); add images or remove the folder")
        files.append(found)
    return classes, files


def _layout(where: str, root: Path) -> dict[str, Path]:
    """``{"train": root/train, "test": root/test}`` if both exist, else ``{"train": root}``."""
    if not root.exists():
        raise ValueError(f"{where}: no such directory; give a folder holding one sub-folder of "
                         "images per class (or train/ and test/ folders of those)")
    if not root.is_dir():
        raise ValueError(f"{where}: is a file; give the folder holding one sub-folder of "
                         "images per class")
    train, test = root / "train", root / "test"
    if train.is_dir() and test.is_dir():
        return {"train": train, "test": test}
    if train.is_dir() != test.is_dir():
        have, lack = ("train", "test") if train.is_dir() else ("test", "train")
        raise ValueError(f"{where}: has {have}/ but no {lack}/; add {root / lack} with the "
                         f"same class folders, or put the class folders directly in {root} "
                         "(a test split is then carved with dataset.test_size)")
    return {"train": root}


def _channels(where: str, headers: list[Header], paths: list[str], color_mode: str) -> int:
    """1 or 3 channels: the mode's, or under ``auto`` the first image's (no gray/RGB mix)."""
    if color_mode != "auto":
        return 1 if color_mode == "grayscale" else 3
    first = headers[0].gray
    for path, header in zip(paths, headers):
        if header.gray != first:
            gray, rgb = (paths[0], path) if first else (path, paths[0])
            raise ValueError(
                f"{where}: grayscale and color images are mixed ({gray} is grayscale, {rgb} "
                "is color) and dataset.color_mode=auto takes the first image's channels; set "
                "dataset.color_mode=rgb (or grayscale) to convert them all")
    return 1 if first else 3


def _size(where: str, headers: list[Header], paths: list[str],
          image_size: tuple[int, int] | None) -> tuple[int, int]:
    """``image_size``, or the first image's size, which every image must then have."""
    if image_size:
        return image_size
    h, w = headers[0].height, headers[0].width
    for path, header in zip(paths, headers):
        if (header.height, header.width) != (h, w):
            raise ValueError(
                f"{where}: {path} is {header.height}x{header.width} but {paths[0]} is "
                f"{h}x{w}; images of different sizes need one size: set dataset.image_size="
                f"({h}, {w}) (height, width) to resize them all")
    return h, w


def folder(path: str | os.PathLike, *, image_size: Any = (), color_mode: str = "auto"
           ) -> Source:
    """``folder:PATH``: one sub-folder of images per class, read lazily as ``FileImages``.

    ``PATH/train/CLASS/*`` and ``PATH/test/CLASS/*`` are the splits when both exist (same
    classes), else ``PATH/CLASS/*`` is the train split alone. Class names are the folder
    names, sorted; image files (.png .jpg .jpeg .bmp .gif, any case, in sub-folders too) are
    sorted by path; other files and hidden ones (``.name``, e.g. macOS ``._x.png``) are
    ignored, as Keras ignores other files. Every file's header is probed
    (:func:`probe`): corrupt files, a size mismatch without ``image_size`` and a gray/colour
    mix under ``color_mode=auto`` are refused before anything is decoded.

    Raises:
        ValueError: naming the path, the file and the fix.
    """
    where = f"dataset.name='folder:{os.fspath(path)}'"
    size, color_mode = check_image_options(image_size, color_mode)
    root = Path(path).expanduser().resolve()
    layout = _layout(where, root)
    listed = {k: _listing(where, d) for k, d in layout.items()}
    classes = listed["train"][0]
    if "test" in listed and listed["test"][0] != classes:
        only_train = sorted(set(classes) - set(listed["test"][0]))
        only_test = sorted(set(listed["test"][0]) - set(classes))
        raise ValueError(f"{where}: train/ and test/ need the same class folders; only in "
                         f"train/: {only_train or 'none'}, only in test/: {only_test or 'none'}")
    paths = [p for k in listed for files in listed[k][1] for p in files]
    headers = [probe(p) for p in paths]
    channels = _channels(where, headers, paths, color_mode)
    size = _size(where, headers, paths, size)
    splits = {}
    for k, (_, files) in listed.items():
        labels = np.concatenate([np.full(len(f), c, np.int64) for c, f in enumerate(files)])
        splits[k] = (FileImages([p for f in files for p in f], size, channels), labels)
    return Source(splits, tuple(classes), str(root))


def split_spec(spec: str) -> list[str]:
    """``NAME[/CONFIG][:SPLIT[:SPLIT]]`` cut at the colons outside brackets (``train[:80%]``)."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(spec):
        depth += (ch == "[") - (ch == "]")
        if ch == ":" and depth == 0:
            parts.append(spec[start:i])
            start = i + 1
    return [*parts, spec[start:]]


def _tfds_splits(where: str, available: list[str], named: list[str]) -> list[str | None]:
    """[train, test or None (carve it)]: the named splits, else the builder's."""
    if len(named) > 2 or any(not s for s in named):
        raise ValueError(f"{where}: expected tfds:NAME[/CONFIG][:TRAIN_SPLIT[:TEST_SPLIT]], "
                         "e.g. tfds:mnist:train:test or tfds:tf_flowers:train[:80%]")
    if named:
        return [named[0], named[1] if len(named) == 2 else None]
    if not available:  # an unprepared builder (or tfds.testing.mock_data) lists no splits
        return ["train", "test"]
    if "train" not in available:
        raise ValueError(f"{where}: no 'train' split (it has {', '.join(available)}); name "
                         "them: tfds:NAME:TRAIN_SPLIT[:TEST_SPLIT]")
    test = next((s for s in ("test", "validation") if s in available), None)
    return ["train", test]


def _describe(features: Any) -> str:
    try:
        return ", ".join(f"{k}: {type(v).__name__}{tuple(v.shape)}" for k, v in features.items())
    except Exception:  # noqa: BLE001 - only for a message
        return repr(features)


def _supervised(where: str, info: Any, tfds: Any) -> tuple[str, Any, Any, bool]:
    """(input key, input feature, label feature, is_image) of a builder, or a ValueError."""
    keys, features = info.supervised_keys, info.features
    supported = ("supported: an image (tfds.features.Image) or 1-D numeric vector "
                 "(tfds.features.Tensor of shape (D,)) input with a ClassLabel label")
    if not (isinstance(keys, tuple) and len(keys) == 2 and all(isinstance(k, str) for k in keys)):
        raise ValueError(f"{where}: the dataset has no (input, label) supervised keys "
                         f"(supervised_keys={keys!r}; features: {_describe(features)}); "
                         f"{supported}")
    x_feature, label = features[keys[0]], features[keys[1]]
    if not isinstance(label, tfds.features.ClassLabel):
        raise ValueError(f"{where}: the label {keys[1]!r} is {type(label).__name__}, not a "
                         f"ClassLabel (classification only; features: {_describe(features)}); "
                         f"{supported}")
    is_image = isinstance(x_feature, tfds.features.Image)
    dtype = np.dtype(getattr(x_feature, "np_dtype", np.object_))
    is_vector = (type(x_feature) is tfds.features.Tensor and len(x_feature.shape) == 1
                 and bool(x_feature.shape[0]) and np.issubdtype(dtype, np.number))
    if not (is_image or is_vector):
        raise ValueError(f"{where}: the input {keys[0]!r} is {type(x_feature).__name__}"
                         f"{tuple(x_feature.shape)} (features: {_describe(features)}); "
                         f"{supported}")
    return keys[0], x_feature, label, is_image


def _tfds_images(where: str, feature: Any, size: tuple[int, int] | None, color_mode: str
                 ) -> tuple[tuple[int, ...], np.dtype, Callable]:
    """(example shape, dtype, convert) for an Image feature read with SkipDecoding."""
    h, w, c = feature.shape
    channels = (c or 3) if color_mode == "auto" else (1 if color_mode == "grayscale" else 3)
    if size is None and not (h and w):
        raise ValueError(f"{where}: the images vary in size ({feature.shape}); set "
                         "dataset.image_size=(height, width) to resize them all")
    size = size or (int(h), int(w))
    dtype = np.dtype(np.uint8 if np.dtype(feature.np_dtype) == np.uint8 else np.float32)

    def convert(raw):
        image = convert_image(feature.decode_example(raw), channels, size)
        return tf.cast(image, tf.as_dtype(dtype))

    return (*size, channels), dtype, convert


def tfds_source(spec: str, *, data_dir: str | os.PathLike | None = None, image_size: Any = (),
                color_mode: str = "auto") -> Source:
    """``tfds:NAME[/CONFIG][:TRAIN_SPLIT[:TEST_SPLIT]]`` as lazy ``StreamImages``.

    Read through ``tfds.builder(NAME/CONFIG, data_dir)`` with ``as_supervised=True`` and
    ``shuffle_files=False`` (the same order on every pass). Splits: the named ones (TFDS
    slicing such as ``train[:80%]`` allowed), else ``train`` and ``test`` (or
    ``validation``); with no test split the caller carves one. Labels come from one pass
    with the image decoding skipped (``tfds.decode.SkipDecoding``); images are decoded only
    when read, converted by ``dataset.color_mode`` and resized to ``dataset.image_size``.

    Raises:
        ValueError: unknown dataset, no supervised keys, an input that is neither an image
            nor a 1-D vector (text, audio, ...), a non-ClassLabel label, or data that TFDS
            cannot load (offline), each naming what exists and what is supported.
    """
    import tensorflow_datasets as tfds  # slow to import: only when a tfds: source is used

    where = f"dataset.name='tfds:{spec}'"
    size, color_mode = check_image_options(image_size, color_mode)
    name, *named = split_spec(spec)
    how = ("run once with internet access so TFDS downloads it (into dataset.data_dir if set, "
           "else TFDS's default ~/tensorflow_datasets), or set dataset.data_dir to a TFDS data "
           "dir that holds it")
    try:
        builder = tfds.builder(name, data_dir=os.fspath(data_dir) if data_dir else None)
    except Exception as e:  # tfds raises many kinds: not found, bad config, bad version
        raise ValueError(f"{where}: tensorflow_datasets cannot open {name!r} "
                         f"({type(e).__name__}: {_first_line(e)})") from e
    x_key, feature, label, is_image = _supervised(where, builder.info, tfds)
    splits = _tfds_splits(where, list(builder.info.splits.keys()), named)
    if is_image:
        shape, dtype, convert = _tfds_images(where, feature, size, color_mode)
    else:
        dtype = np.dtype(np.uint8 if np.dtype(feature.np_dtype) == np.uint8 else np.float32)
        shape, convert = tuple(feature.shape), _cast(dtype, False)
    decoders = {x_key: tfds.decode.SkipDecoding()} if is_image else None
    out, split = {}, splits[0]
    try:
        builder.download_and_prepare()
        for k, split in zip(("train", "test"), splits):
            if split is None:
                continue
            ds = builder.as_dataset(split=split, as_supervised=True, shuffle_files=False,
                                    decoders=decoders)
            labels = [b.numpy() for b in ds.map(lambda _, y: y).batch(65536)]
            y = np.concatenate(labels) if labels else np.zeros((0,), np.int64)
            out[k] = (StreamImages(ds.map(lambda x, _: x), len(y), shape, dtype, convert), y)
    except Exception as e:  # offline, not prepared, a bad split name: all need the same fix
        raise ValueError(f"{where}: TFDS could not read split {split!r} "
                         f"({type(e).__name__}: {_first_line(e)}). Fix: {how}") from e
    return Source(out, tuple(label.names), f"tfds:{spec}")
