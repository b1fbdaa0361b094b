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
it returns batches with no random access and no lazy subsets (validation split, ``limit``).
Listing and checking folders and opening tfds builders is ``recipes.readers``' job.

Layer 2: imports numpy and tensorflow, nothing from ``recipes``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")  # any case, like Keras' list
COLOR_MODES = ("auto", "grayscale", "rgb")
SHUFFLE_BUFFER = 10_000  # most examples a stream's shuffle buffer holds ...
SHUFFLE_BUFFER_BYTES = 256 << 20  # ... and most bytes: min(N, 10_000, 256 MiB / example)
_AUTOTUNE = tf.data.AUTOTUNE


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
                         f"({first_line(error)})") from error


def first_line(error: Exception) -> str:
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
                    f"{path}: cannot be decoded as an image ({first_line(e)}); the file is "
                    "corrupt or not an image: replace or delete it") from error
        super()._read_error(positions, error)


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


def cast_examples(dtype: np.dtype, add_channel: bool) -> Callable:
    """A map function: one example cast to ``dtype`` (with a channel axis added if asked)."""
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
    x = StreamImages(ds.map(lambda x, _: x), len(y), example_shape, dtype,
                     cast_examples(dtype, rank2))
    return x, y
