"""Data preprocessing fitted on the training split only (CS231n "Data preprocessing").

Methods: mean image, per-channel mean, standardization, PCA and ZCA whitening.

The statistics come from the training images alone and are then applied, unchanged, to
validation, test and prediction inputs; computing them on all data leaks the test set into
training. A fitted `Preprocessor` is saved into the run's workdir (``preprocessing.json`` +
``preprocessing.npz``) and reloaded at predict time.

Every method has two equivalent implementations: `Preprocessor.transform` (numpy, for whole
arrays) and `Preprocessor.apply` (TensorFlow ops, for batches inside a ``tf.data`` map).

Inputs are NHWC images or (N, D) vectors; for vectors ``mean_image`` and ``per_channel_mean``
both subtract the per-feature mean and ``standardize`` is per feature. A lazy training split
(``recipes.sources.Images``, e.g. ``folder:PATH``) is never loaded whole: mean and variance
are accumulated in float64 over one streamed pass (``x.batches``), and PCA/ZCA are fitted on
a seeded sample of at most ``PCA_SAMPLE`` examples. ``transform`` refuses a lazy ``x`` (it
would load it all): the pipeline applies the preprocessor batch by batch
(``recipes.pipeline.make(..., preprocessor=pre)``).

Example:
    >>> pre = fit(splits.train.x, "standardize")
    >>> x_val = pre.transform(splits.val.x)           # numpy, float32
    >>> ds = ds.map(lambda x, y: (pre.apply(x), y))   # the same math in TF
    >>> pre.save(workdir); pre = Preprocessor.load(workdir)
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from recipes import io as atomic
from recipes import sources

METHODS = ("none", "mean_image", "per_channel_mean", "standardize", "pca", "zca")

# Methods whose statistics are per channel: they apply to images of any height and width
# (random crops included). The others are per pixel and need the exact fitted shape.
SHAPE_FREE_METHODS = ("none", "per_channel_mean", "standardize")

JSON_NAME = "preprocessing.json"
NPZ_NAME = "preprocessing.npz"
_FORMAT_VERSION = 1
_CHUNK = 4096  # images per chunk when accumulating statistics (bounds peak memory)
_STREAM_CHUNK_BYTES = 1 << 20  # float32 bytes per batch of a lazy split's streamed statistics
PCA_SAMPLE = 10_000  # most examples of a lazy split that PCA/ZCA are fitted on (seeded sample)


def to_float(x: Any) -> Any:
    """Converts images to float32: uint8 is scaled by 1/255 into [0, 1], other dtypes are cast.

    Args:
        x: A numpy array (or array-like) or a ``tf.Tensor``.

    Returns:
        The same kind of object (numpy array or tensor) with dtype float32.
    """
    if isinstance(x, (tf.Tensor, tf.Variable)):
        if x.dtype == tf.uint8:
            return tf.cast(x, tf.float32) / 255.0
        return tf.cast(x, tf.float32)
    x = np.asarray(x)
    if x.dtype == np.uint8:
        return x.astype(np.float32) / np.float32(255.0)
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise ValueError(f"Images must be numeric arrays, got dtype {x.dtype}.")
    return x.astype(np.float32, copy=False)


def _check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(
            f"Unknown dataset.preprocess={method!r}. Valid methods: {', '.join(METHODS)}."
        )
    return method


def _num_components(pca_components: int | float, dim: int) -> int | float:
    """Validates `dataset.pca_components`: an int k in [1, dim], or a variance fraction.

    An integral float above 1 (what a ConfigDict makes of ``--config...pca_components=50``,
    since the default 0.99 fixes the field's type to float) counts as k.
    """
    bad = (
        f"dataset.pca_components={pca_components!r} is invalid: use an int k in [1, {dim}] "
        "(components to keep) or a float in (0, 1] (fraction of the variance to keep)."
    )
    if isinstance(pca_components, (bool, np.bool_)) or not isinstance(
        pca_components, (int, float, np.integer, np.floating)
    ):
        raise ValueError(bad)
    value = float(pca_components)
    if isinstance(pca_components, (int, np.integer)) or (value > 1 and value.is_integer()):
        if not 1 <= value <= dim:
            raise ValueError(bad)
        return int(value)
    if not 0.0 < value <= 1.0:
        raise ValueError(bad)
    return value


def _chunks(x: np.ndarray) -> Iterator[np.ndarray]:
    for start in range(0, len(x), _CHUNK):
        yield to_float(x[start : start + _CHUNK])


def _mean_axes(ndim: int) -> tuple[int, ...]:
    """``Normalization`` axes of ``mean_image``: every axis but the batch's (per pixel/feature)."""
    return tuple(range(1, ndim))


def _adapt(x: np.ndarray, axis: int | tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance over the training set with `keras.layers.Normalization.adapt`."""
    layer = keras.layers.Normalization(axis=axis, dtype="float32")
    layer.adapt(_chunks(x))  # an iterable of batches: streamed, one chunk in memory at a time
    mean = keras.ops.convert_to_numpy(layer.adapt_mean).astype(np.float32)
    variance = keras.ops.convert_to_numpy(layer.adapt_variance).astype(np.float32)
    return mean, variance


def _mean_and_covariance(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) of the flattened images, in float64, chunk by chunk."""
    n, dim = len(x), int(np.prod(x.shape[1:]))
    total = np.zeros(dim)
    for chunk in _chunks(x):
        total += chunk.reshape(len(chunk), dim).sum(axis=0, dtype=np.float64)
    mean = total / n
    cov = np.zeros((dim, dim))
    for chunk in _chunks(x):  # float64: whitening amplifies errors in small eigenvalues
        centered = chunk.reshape(len(chunk), dim).astype(np.float64) - mean
        cov += centered.T @ centered
    return mean, cov / n


def _eigh_descending(cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    eigenvalues, eigenvectors = np.linalg.eigh(cov)  # ascending, for a symmetric matrix
    order = np.argsort(eigenvalues)[::-1]
    return np.clip(eigenvalues[order], 0.0, None), eigenvectors[:, order]


def fit(
    x_train: np.ndarray | sources.Images,
    method: str = "standardize",
    *,
    pca_components: int | float = 0.99,
    zca_epsilon: float = 1e-2,
) -> Preprocessor:
    """Fits a preprocessing method on the training images (and only on them).

    Methods (all on ``to_float(x_train)``, i.e. [0, 1] for 8-bit images):
        - ``none``: identity (float conversion only).
        - ``mean_image``: subtract the per-pixel mean image (AlexNet).
        - ``per_channel_mean``: subtract one mean per channel (VGG).
        - ``standardize``: per-channel ``(x - mean) / std``.
        - ``pca``: center, then project the flattened image on the top-k principal
          components; the output is a flat vector ``(k,)``.
        - ``zca``: center, then whiten with ``W = U diag(1 / sqrt(S + eps)) U^T``; the output
          keeps the image shape.

    For (N, D) vectors "pixel" and "channel" both mean feature. PCA and ZCA eigen-decompose
    the D x D pixel covariance (D = H*W*C): about 30 s for CIFAR-10 (D = 3072) on 2 CPU
    cores; the others take a few seconds.

    A lazy ``x_train`` (``recipes.sources.Images``) is streamed, never loaded whole: the
    mean and variance (``mean_image``, ``per_channel_mean``, ``standardize``) are exact,
    accumulated in float64 over one pass of ``x_train.batches``; ``pca``/``zca`` are fitted
    on a seeded (seed 0) sample of at most ``PCA_SAMPLE`` = 10,000 examples, loaded with
    ``x_train[sample]``.

    Args:
        x_train: Training images, NHWC, or (N, D) vectors; uint8 or float; array or lazy.
        method: One of `METHODS` (``config.dataset.preprocess``).
        pca_components: ``pca`` only: an int k, or a float in (0, 1] giving the fraction of
            the variance to keep (the smallest k that reaches it).
        zca_epsilon: ``zca`` only: added to the eigenvalues before the inverse square root;
            larger values whiten less and amplify noise less.

    Returns:
        A fitted `Preprocessor`.

    Raises:
        ValueError: On an unknown method, bad options, badly shaped images, or a fitted
            statistic that is not finite (inputs too large: scale them).
    """
    _check_method(method)
    lazy = sources.is_lazy(x_train)
    x_train = x_train if lazy else np.asarray(x_train)
    if x_train.ndim not in (2, 4) or len(x_train) == 0:
        raise ValueError(
            f"fit() needs a non-empty NHWC batch of training images or (N, D) vectors, got "
            f"shape {x_train.shape}."
        )
    input_shape = tuple(int(d) for d in x_train.shape[1:])
    if method in ("pca", "zca") and len(x_train) < 2:
        raise ValueError(f"dataset.preprocess={method!r} needs at least 2 training images.")
    if lazy:
        params, options = _fit_lazy(x_train, method, pca_components, zca_epsilon)
    else:
        params, options = _fit_params(x_train, method, pca_components, zca_epsilon)
    _check_finite(params, x_train, method)  # before a caller can save anything
    return Preprocessor(method, params, input_shape, options)


def _fit_lazy(
    x: sources.Images, method: str, pca_components: int | float, zca_epsilon: float
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """`fit` of a lazy split: streamed moments, or PCA/ZCA on a bounded seeded sample."""
    if method == "none":
        return {}, {}
    if method in ("pca", "zca"):
        n = len(x)
        sample = np.arange(n)
        if n > PCA_SAMPLE:  # sorted: a stream-backed source reads it in one pass
            sample = np.sort(np.random.default_rng(0).choice(n, PCA_SAMPLE, replace=False))
        return _fit_params(x[sample], method, pca_components, zca_epsilon)
    # mean_image: per pixel (reduce over examples only); else per channel (all but the last).
    axes = (0,) if method == "mean_image" else tuple(range(x.ndim - 1))
    mean, variance = streamed_moments(x, axes)
    params = {"mean": mean.astype(np.float32)}
    if method == "standardize":
        params["variance"] = variance.astype(np.float32)
    return params, {}


@np.errstate(over="ignore", invalid="ignore")  # `_check_finite` reports non-finite results
def streamed_moments(x: sources.Images, axes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (population) variance of ``to_float(x)`` over ``axes``, in one streamed pass.

    Written by hand rather than ``Normalization.adapt``: that merges batch statistics in
    float32; here each batch's mean and squared deviations are summed in float64 and merged
    with Chan et al.'s pairwise update, so the result does not depend on the batch size.
    Batches hold about 1 MiB of float32, whatever the image size (peak: a few times that).

    Returns:
        ``(mean, variance)`` float64, shaped as the axes that are kept.
    """
    per_example = 4 * int(np.prod(x.shape[1:]))
    batch = int(np.clip(_STREAM_CHUNK_BYTES // per_example, 1, _CHUNK))
    count, mean, m2 = 0, 0.0, 0.0
    for raw in x.batches(batch):
        chunk = to_float(raw)
        m = int(np.prod([chunk.shape[a] for a in axes]))
        c_mean = chunk.mean(axis=axes, dtype=np.float64, keepdims=True)
        c32 = c_mean.astype(np.float32)
        dev = chunk - c32  # float32 deviations from the (rounded) batch mean ...
        np.square(dev, out=dev)
        # ... summed in float64, minus the rounding of the centre: sum (x - c_mean)^2.
        c_m2 = dev.sum(axis=axes, dtype=np.float64, keepdims=True) - m * (c_mean - c32) ** 2
        total = count + m
        delta = c_mean - mean
        mean = mean + delta * (m / total)
        m2 = m2 + c_m2 + delta**2 * (count * m / total)
        count = total
    keep = lambda a: np.squeeze(a, axis=axes)  # noqa: E731
    return keep(np.asarray(mean)), keep(np.maximum(np.asarray(m2) / count, 0.0))


@np.errstate(over="ignore", invalid="ignore", divide="ignore")  # `_check_finite` reports it
def _fit_params(
    x_train: np.ndarray, method: str, pca_components: int | float, zca_epsilon: float
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The statistics of `fit` (see there): ``(params, options)``."""
    dim = int(np.prod(x_train.shape[1:]))
    options: dict[str, Any] = {}
    params: dict[str, np.ndarray] = {}
    if method == "mean_image":
        params["mean"], _ = _adapt(x_train, axis=_mean_axes(x_train.ndim))
    elif method == "per_channel_mean":
        params["mean"], _ = _adapt(x_train, axis=-1)
    elif method == "standardize":
        params["mean"], params["variance"] = _adapt(x_train, axis=-1)
    elif method == "pca":
        # Written by hand: Keras has no PCA layer. Eigen-decomposition of the covariance
        # (D x D) rather than an SVD of the data (N x D): cheaper when N >> D.
        k = requested = _num_components(pca_components, dim)
        mean, cov = _mean_and_covariance(x_train)
        _check_finite({"mean": mean, "covariance": cov}, x_train, method)  # before eigh
        eigenvalues, eigenvectors = _eigh_descending(cov)
        ratio = eigenvalues / max(eigenvalues.sum(), np.finfo(np.float64).tiny)
        if isinstance(k, float):  # smallest k whose cumulative ratio reaches the fraction
            k = int(np.searchsorted(np.cumsum(ratio), k - 1e-12) + 1)
            k = min(k, dim)
        options["pca_components"] = requested  # a python int or float: JSON-serializable
        params["mean"] = mean.astype(np.float32)
        params["components"] = eigenvectors[:, :k].astype(np.float32)
        params["explained_variance_ratio"] = ratio[:k].astype(np.float32)
    elif method == "zca":
        # Written by hand: Keras has no whitening layer.
        if isinstance(zca_epsilon, bool) or not float(zca_epsilon) > 0:
            raise ValueError(
                f"dataset.zca_epsilon={zca_epsilon!r} must be > 0 (e.g. 1e-2 for [0, 1] "
                "images): it keeps near-zero eigenvalues from blowing up the whitening."
            )
        mean, cov = _mean_and_covariance(x_train)
        _check_finite({"mean": mean, "covariance": cov}, x_train, method)  # before eigh
        eigenvalues, eigenvectors = _eigh_descending(cov)
        scale = 1.0 / np.sqrt(eigenvalues + float(zca_epsilon))
        options["zca_epsilon"] = float(zca_epsilon)
        params["mean"] = mean.astype(np.float32)
        params["whitening"] = ((eigenvectors * scale) @ eigenvectors.T).astype(np.float32)
    return params, options


def _check_finite(params: dict[str, np.ndarray], x_train: np.ndarray, method: str) -> None:
    """Refuses statistics with NaN or inf: they would turn every transformed input into NaN.

    `recipes.data.validate_arrays` bounds the pixels so this never fires on checked data;
    it guards direct calls of `fit` with huge values (float32 squares overflow near 1.8e19).
    """
    for name, value in params.items():
        if not np.isfinite(value).all():
            bad = "NaN" if np.isnan(value).any() else "inf"
            if sources.is_lazy(x_train):  # its values are not all in memory to be summed up
                seen = f"lazy training examples ({x_train.dtype}; NaN or huge values?)"
            else:
                with np.errstate(invalid="ignore"):
                    lo, hi = float(np.min(x_train)), float(np.max(x_train))
                seen = f"training images ranging from min {lo:.4g} to max {hi:.4g} " \
                       f"({x_train.dtype})"
            raise ValueError(
                f"dataset.preprocess={method!r}: the fitted {name} contains {bad} for {seen}; "
                "the statistics overflow float32. Fix: scale the inputs to [0, 1] or [-1, 1]"
            )


def _expected_shapes(
    method: str, input_shape: tuple[int, ...], params: dict[str, np.ndarray]
) -> dict[str, tuple[int, ...]]:
    """The arrays each method stores, with their shapes (k for PCA read from the arrays)."""
    channels, dim = input_shape[-1], int(np.prod(input_shape))
    if method == "mean_image":
        return {"mean": input_shape}
    if method == "per_channel_mean":
        return {"mean": (channels,)}
    if method == "standardize":
        return {"mean": (channels,), "variance": (channels,)}
    if method == "pca":
        k = params["components"].shape[-1] if "components" in params else -1
        return {"mean": (dim,), "components": (dim, k), "explained_variance_ratio": (k,)}
    if method == "zca":
        return {"mean": (dim,), "whitening": (dim, dim)}
    return {}


class Preprocessor:
    """A fitted preprocessing method: statistics plus the numpy and TF code to apply them.

    Attributes:
        method: One of `METHODS`.
        params: The fitted float32 arrays (e.g. ``mean``, ``variance``, ``components``).
        input_shape: The (H, W, C) shape of the images (or (D,) of the vectors) it was
            fitted on.
        options: The options used for fitting (``pca_components``, ``zca_epsilon``).
    """

    def __init__(
        self,
        method: str,
        params: dict[str, np.ndarray],
        input_shape: tuple[int, ...],
        options: dict[str, Any] | None = None,
    ):
        self.method = _check_method(method)
        self.input_shape = tuple(int(d) for d in input_shape)
        self.params = {k: np.asarray(v, dtype=np.float32) for k, v in params.items()}
        self.options = dict(options or {})
        if len(self.input_shape) not in (1, 3):
            raise ValueError(f"input_shape must be (H, W, C) or (D,), got {self.input_shape}.")
        expected = _expected_shapes(self.method, self.input_shape, self.params)
        got = {k: v.shape for k, v in self.params.items()}
        if got != expected:
            raise ValueError(
                f"Preprocessor {self.method!r} for images {self.input_shape} expects arrays "
                f"{expected}, got {got}."
            )
        self._layer: keras.layers.Normalization | None = None
        self._tensors: dict[str, tf.Tensor] | None = None

    def __repr__(self) -> str:
        return (
            f"Preprocessor(method={self.method!r}, input_shape={self.input_shape}, "
            f"output_shape={self.output_shape})"
        )

    @property
    def output_shape(self) -> tuple[int, ...]:
        """Shape of one preprocessed image: ``(k,)`` for PCA, else the input shape."""
        if self.method == "pca":
            return (int(self.params["components"].shape[1]),)
        return self.input_shape

    def output_shape_for(self, image_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Output shape for images of `image_shape` (which may be a crop of the fitted size).

        Args:
            image_shape: (H, W, C) of the images that will be passed in.

        Returns:
            The shape of one output.

        Raises:
            ValueError: If the method cannot apply to that shape: per-pixel statistics
                (mean_image, pca, zca) need exactly the fitted shape, per-channel ones
                need the same channel count.
        """
        image_shape = tuple(int(d) for d in image_shape)
        if len(self.input_shape) == 1 and image_shape != self.input_shape:
            raise ValueError(f"The preprocessor was fitted on {self.input_shape} vectors; it "
                             f"cannot apply to {image_shape} inputs.")
        if len(image_shape) != len(self.input_shape) or image_shape[-1] != self.input_shape[-1]:
            raise ValueError(
                f"The preprocessor was fitted on {self.input_shape} images; it cannot apply "
                f"to {image_shape} (the channel count must match)."
            )
        if self.method in SHAPE_FREE_METHODS:
            return image_shape
        if image_shape != self.input_shape:
            raise ValueError(
                f"dataset.preprocess={self.method!r} holds per-pixel statistics fitted on "
                f"{self.input_shape} images, so it cannot apply to {image_shape} images (e.g. "
                "random crops: augment.crop_size). Use standardize, per_channel_mean or none "
                "with crops, or set augment.crop_size=0."
            )
        return self.output_shape

    # --- numpy -----------------------------------------------------------------------------

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Same as `transform`."""
        return self.transform(x)

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Applies the fitted statistics to a batch of images with numpy.

        Args:
            x: NHWC images or (N, D) vectors, uint8 or float (``to_float`` is applied
                first); an array, not lazy ``sources.Images``.

        Returns:
            float32 array of shape ``(N,) + output_shape_for(x.shape[1:])``.

        Raises:
            ValueError: for lazy ``x``, whose transformed copy would hold every example in
                memory (four bytes per uint8 pixel): use the pipeline, or a slice.
        """
        if sources.is_lazy(x):
            raise ValueError(
                f"transform() got lazy examples {x!r}: transforming them all would load them "
                "into memory. Use recipes.pipeline.make(x, y, ..., preprocessor=pre) to "
                "preprocess batch by batch, or pre.transform(x[a:b]) for a slice."
            )
        x = to_float(x)
        if x.ndim != len(self.input_shape) + 1:
            raise ValueError(f"transform() needs a NHWC batch (or (N, D) vectors for a "
                             f"preprocessor fitted on vectors), got shape {x.shape}.")
        self.output_shape_for(x.shape[1:])
        p, m = self.params, self.method
        if m == "none":
            return np.array(x, dtype=np.float32, copy=True)
        if m in ("mean_image", "per_channel_mean"):
            return (x - p["mean"]).astype(np.float32)
        if m == "standardize":  # the formula of keras.layers.Normalization
            std = np.maximum(np.sqrt(p["variance"]), keras.config.epsilon())
            return ((x - p["mean"]) / std).astype(np.float32)
        flat = x.reshape(len(x), -1) - p["mean"]
        if m == "pca":
            return (flat @ p["components"]).astype(np.float32)
        return (flat @ p["whitening"]).reshape(x.shape).astype(np.float32)  # zca

    # --- TensorFlow ------------------------------------------------------------------------

    def _normalization(self) -> keras.layers.Normalization:
        """The fitted statistics as a built `keras.layers.Normalization` (mean-only: var 1)."""
        if self._layer is None:
            with tf.init_scope():  # eager: the first call may be inside a tf.data trace
                self._layer = self._build_normalization()
        return self._layer

    def _build_normalization(self) -> keras.layers.Normalization:
        mean = self.params["mean"]
        variance = self.params.get("variance", np.ones_like(mean))
        axis = _mean_axes(len(self.input_shape) + 1) if self.method == "mean_image" else -1
        layer = keras.layers.Normalization(axis=axis, mean=mean, variance=variance, dtype="float32")
        layer.build((None,) + self.input_shape)  # needed before use inside tf.data
        return layer

    def apply(self, x: tf.Tensor) -> tf.Tensor:
        """Applies the fitted statistics to a batch with TF ops (usable in a ``tf.data`` map).

        Args:
            x: NHWC batch tensor (or array), or (batch, D) vectors; uint8 or float.

        Returns:
            float32 tensor of shape ``(batch,) + output_shape_for(image shape)``.
        """
        x = to_float(tf.convert_to_tensor(x))
        if x.shape.rank != len(self.input_shape) + 1:
            raise ValueError(f"apply() needs a NHWC batch (or (batch, D) vectors for a "
                             f"preprocessor fitted on vectors), got shape {x.shape}.")
        if x.shape[1:].is_fully_defined():  # unknown sizes (a generic trace): checked at run
            self.output_shape_for(x.shape[1:])
        if self.method == "none":
            return x
        if self.method in ("mean_image", "per_channel_mean", "standardize"):
            return tf.cast(self._normalization()(x), tf.float32)
        if self._tensors is None:
            with tf.init_scope():  # eager constants, captured by every graph that uses them
                self._tensors = {k: tf.constant(v) for k, v in self.params.items()}
        t = self._tensors
        flat = tf.reshape(x, (-1, int(np.prod(self.input_shape)))) - t["mean"]
        if self.method == "pca":
            return tf.linalg.matmul(flat, t["components"])
        return tf.reshape(tf.linalg.matmul(flat, t["whitening"]), tf.shape(x))  # zca

    # --- persistence -----------------------------------------------------------------------

    def save(self, directory: str | os.PathLike) -> None:
        """Writes ``preprocessing.json`` and ``preprocessing.npz`` into `directory`, atomically.

        Each file goes to a temporary file in the same directory and is renamed into place
        (`recipes.io`), so a crash never leaves a half-written file under the final name.
        """
        directory = os.fspath(directory)
        os.makedirs(directory, exist_ok=True)
        meta = {
            "format_version": _FORMAT_VERSION,
            "method": self.method,
            "input_shape": list(self.input_shape),
            "output_shape": list(self.output_shape),
            "options": self.options,
            "arrays": {k: list(v.shape) for k, v in self.params.items()},
        }
        buffer = io.BytesIO()
        np.savez(buffer, **self.params)
        # Arrays first, metadata last: each file is replaced atomically (recipes.io), and
        # `load` checks that the two agree.
        atomic.write_bytes(os.path.join(directory, NPZ_NAME), buffer.getvalue())
        atomic.write_json(os.path.join(directory, JSON_NAME), meta)

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Preprocessor:
        """Reads a preprocessor written by `save`.

        Raises:
            ValueError: If a file is missing, unreadable, or the two files disagree.
        """
        directory = os.fspath(directory)
        json_path = os.path.join(directory, JSON_NAME)
        npz_path = os.path.join(directory, NPZ_NAME)
        try:
            with open(json_path, encoding="utf-8") as f:
                meta = json.load(f)
            method, input_shape = meta["method"], tuple(meta["input_shape"])
            options, arrays = meta.get("options", {}), meta["arrays"]
            if meta.get("format_version") != _FORMAT_VERSION:
                raise ValueError(f"unsupported format_version {meta.get('format_version')!r}")
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"Cannot read the preprocessor metadata {json_path}: {e}") from e
        try:
            with np.load(npz_path, allow_pickle=False) as npz:
                params = {k: npz[k] for k in npz.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise ValueError(f"Cannot read the preprocessor arrays {npz_path}: {e}") from e
        if {k: list(v.shape) for k, v in params.items()} != arrays:
            raise ValueError(
                f"{npz_path} does not match {json_path}: arrays "
                f"{ {k: list(v.shape) for k, v in params.items()} } vs {arrays}."
            )
        try:
            pre = cls(method, params, input_shape, options)
        except ValueError as e:
            raise ValueError(f"Invalid preprocessor in {directory}: {e}") from e
        if list(pre.output_shape) != list(meta.get("output_shape", pre.output_shape)):
            raise ValueError(f"{json_path}: output_shape does not match the arrays.")
        return pre
