"""Test-time augmentation: average the softmax over several crops (and flips) of each image.

AlexNet (Krizhevsky, Sutskever & Hinton 2012, "ImageNet Classification with Deep
Convolutional Neural Networks", §4.1) predicts by "extracting five 224×224 patches (the four
corner patches and the center patch) as well as their horizontal reflections (hence ten
patches in all), and averaging the predictions made by the network's softmax layer on the ten
patches". CS231n's "Training neural networks II" lists it as a cheap few-tenths-of-a-percent.

The model saw random crops of ``augment.crop_size`` during training and the center crop at
evaluation; this module evaluates the same model on more crops of the same size. Inputs are
the *preprocessed* full-size images (``preprocess`` is per-channel whenever crops are used,
so cropping after preprocessing equals preprocessing after cropping).

Modes (``MODES``, the values of ``evaluate.tta``):

* ``none`` / ``center``: the center crop (what a plain evaluation sees).
* ``five_crop``: the four corners and the center.
* ``ten_crop``: the five crops and their horizontal flips (AlexNet).
* ``grid``: ``evaluate.grid`` × ``evaluate.grid`` evenly spaced sliding windows.

When the crop is the whole image every window is the image itself: ``five_crop`` equals
``center`` and ``ten_crop`` averages the image and its mirror.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import keras
import numpy as np
import tensorflow as tf

__all__ = ["MODES", "Crop", "CropAveragingEval", "crop_windows", "crops", "evaluate", "predict"]


class Crop(NamedTuple):
    """One test-time view: the window's top-left corner and whether it is mirrored."""

    top: int
    left: int
    flip: bool = False


def _center(space: tuple[int, int], grid: int) -> list[Crop]:
    # Same offsets as keras.layers.RandomCrop at inference: int((H − h) / 2).
    return [Crop(space[0] // 2, space[1] // 2)]


def _five(space: tuple[int, int], grid: int) -> list[Crop]:
    dh, dw = space
    corners = [Crop(0, 0), Crop(0, dw), Crop(dh, 0), Crop(dh, dw)]
    return corners + _center(space, grid)


def _ten(space: tuple[int, int], grid: int) -> list[Crop]:
    five = _five(space, grid)
    return five + [c._replace(flip=True) for c in five]


def _grid(space: tuple[int, int], grid: int) -> list[Crop]:
    if grid == 1:
        return _center(space, grid)
    tops = np.rint(np.linspace(0, space[0], grid)).astype(int)
    lefts = np.rint(np.linspace(0, space[1], grid)).astype(int)
    return [Crop(int(t), int(s)) for t in tops for s in lefts]


#: ``evaluate.tta`` name → windows(free space (H − h, W − w), grid) -> [Crop]; ``none`` is an
#: explicit alias of ``center`` (no test-time augmentation = the plain center crop).
MODES: dict[str, Callable[[tuple[int, int], int], list[Crop]]] = {
    "none": _center,
    "center": _center,
    "five_crop": _five,
    "ten_crop": _ten,
    "grid": _grid,
}


def _check_mode(mode: Any, grid: Any) -> None:
    if mode not in MODES:
        raise ValueError(f"evaluate.tta={mode!r} is not a test-time mode; use one of "
                         f"{list(MODES)}")
    if isinstance(grid, bool) or not isinstance(grid, numbers.Integral) or grid < 1:
        raise ValueError(f"evaluate.grid must be an integer >= 1 (crops per side), got "
                         f"{grid!r}; try 3")


def _size_pair(size: Any, image_size: tuple[int, int]) -> tuple[int, int]:
    """Normalizes a crop size (int, (h, w), 0 or None dims = the image) to (h, w)."""
    if size is None or (isinstance(size, numbers.Integral) and size == 0):
        return image_size
    if isinstance(size, numbers.Integral):
        size = (size, size)
    if len(size) != 2:
        raise ValueError(f"augment.crop_size must be an int or (height, width), got {size!r}")
    out = []
    for s, full in zip(size, image_size):
        if s is None or s == 0:
            s = full
        if isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 0:
            raise ValueError(f"augment.crop_size must be positive integers, got {size!r}")
        out.append(int(s))
    return out[0], out[1]


def crop_windows(mode: str, image_size: Sequence[int], crop_size: Any,
                 grid: int = 3) -> list[Crop]:
    """The views a mode takes of an image.

    Args:
        mode: one of ``MODES``.
        image_size: (H, W) of the full images.
        crop_size: (h, w), or an int for a square; 0/None = the whole image.
        grid: crops per side for ``mode="grid"``.

    Returns:
        The crops, each a window ``[top:top + h, left:left + w]``, possibly mirrored.

    Raises:
        ValueError: an unknown mode, ``grid < 1`` or a crop larger than the image.
    """
    _check_mode(mode, grid)
    hw = (int(image_size[0]), int(image_size[1]))
    h, w = _size_pair(crop_size, hw)
    if h > hw[0] or w > hw[1]:
        raise ValueError(f"augment.crop_size=({h}, {w}) is larger than the images {hw}; use a "
                         "crop_size no larger than the image (0 = the whole image), or feed "
                         "the full-size images, not crops")
    return MODES[mode]((hw[0] - h, hw[1] - w), int(grid))


def crops(x: Any, windows: Sequence[Crop], crop_size: tuple[int, int]) -> tf.Tensor:
    """Cuts every window out of a batch: one slice per window, vectorized over the batch.

    Args:
        x: images (n, H, W, C).
        windows: from ``crop_windows``.
        crop_size: (h, w).

    Returns:
        A (len(windows), n, h, w, C) tensor; view k holds window k of every image.
    """
    x = tf.convert_to_tensor(x)
    h, w = crop_size
    views = []
    for c in windows:
        v = x[:, c.top:c.top + h, c.left:c.left + w, :]
        views.append(tf.image.flip_left_right(v) if c.flip else v)
    return tf.stack(views)


def _model_crop_size(model: keras.Model) -> Any:
    try:
        shape = model.input_shape
    except (AttributeError, ValueError):  # subclassed model without a known input
        return None
    if isinstance(shape, list):  # one-input models only
        shape = shape[0]
    return tuple(shape[1:3]) if shape is not None and len(shape) == 4 else None


class _CropAverager:
    """A compiled "average softmax over the views" for one model, image size and mode."""

    def __init__(self, model: keras.Model, image_shape: Sequence[int], mode: str,
                 crop_size: Any, grid: int, batch_size: int, from_logits: bool = True):
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) \
                or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if len(image_shape) != 3:
            raise ValueError("test-time crops need images (n, H, W, C), got shape "
                             f"(n, *{tuple(image_shape)})")
        image_size = (int(image_shape[0]), int(image_shape[1]))
        if crop_size is None:
            crop_size = _model_crop_size(model)
        self.windows = crop_windows(mode, image_size, crop_size, grid)
        self.crop_size = _size_pair(crop_size, image_size)
        # Each forward pass sees at most max(batch_size, views) crops: memory stays bounded.
        self.chunk = max(1, batch_size // len(self.windows))
        self.model = model
        self.from_logits = from_logits
        spec = tf.TensorSpec((None, *image_shape), tf.float32)
        self._fn = tf.function(self._average, input_signature=[spec])

    def _average(self, x: tf.Tensor) -> tf.Tensor:
        k, h, w = len(self.windows), *self.crop_size
        v = crops(x, self.windows, self.crop_size)  # (k, b, h, w, C)
        v = tf.reshape(v, (-1, h, w, tf.shape(x)[-1]))
        outputs = tf.cast(self.model(v, training=False), tf.float32)
        probs = tf.nn.softmax(outputs, axis=-1) if self.from_logits else outputs
        return tf.reduce_mean(tf.reshape(probs, (k, tf.shape(x)[0], -1)), axis=0)

    def __call__(self, x: Any) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        out = [self._fn(x[i:i + self.chunk]).numpy() for i in range(0, len(x), self.chunk)]
        if not out:
            return np.zeros((0, 0), np.float32)
        return np.concatenate(out)


def predict(model: keras.Model, x: Any, mode: str = "ten_crop", *, crop_size: Any = None,
            grid: int = 3, batch_size: int = 256, from_logits: bool = True) -> np.ndarray:
    """Softmax probabilities averaged over test-time crops (AlexNet, Krizhevsky et al. 2012).

    Args:
        model: a trained model that outputs logits for (h, w, C) crops.
        x: preprocessed full-size images (n, H, W, C).
        mode: one of ``MODES`` (``evaluate.tta``).
        crop_size: (h, w) or an int; None = the model's input size (or the whole image when
            the model takes any size); 0 = the whole image.
        grid: crops per side for ``mode="grid"`` (``evaluate.grid``).
        batch_size: images per forward pass (each image brings all its views).
        from_logits: the model outputs logits (True) or softmax probabilities (False).

    Returns:
        float32 (n, num_classes) probabilities, each row summing to 1.

    Raises:
        ValueError: an unknown mode, ``grid < 1`` or a crop larger than the images, naming
            the config field (``evaluate.tta``, ``evaluate.grid``, ``augment.crop_size``).
    """
    x = np.asarray(x, dtype=np.float32)
    return _CropAverager(model, x.shape[1:], mode, crop_size, grid, batch_size,
                         from_logits)(x)


def scores(probs: np.ndarray, y: Any) -> dict[str, float]:
    """Accuracy and mean negative log-likelihood of probabilities ``probs`` for labels ``y``."""
    y = np.asarray(y)
    if y.ndim == 2:  # one-hot (or soft) labels
        y = y.argmax(axis=-1)
    y = y.astype(np.int64).reshape(-1)
    if len(y) != len(probs):
        raise ValueError(f"{len(probs)} images but {len(y)} labels")
    p_true = probs[np.arange(len(y)), y]
    eps = keras.config.epsilon()  # Keras clips probabilities the same way in its CE
    return {"accuracy": float(np.mean(probs.argmax(axis=-1) == y)),
            "loss": float(np.mean(-np.log(np.clip(p_true, eps, 1.0))))}


def evaluate(model: keras.Model, x: Any, y: Any, mode: str = "ten_crop", *,
             crop_size: Any = None, grid: int = 3, batch_size: int = 256,
             from_logits: bool = True) -> dict[str, float]:
    """Accuracy and loss of the crop-averaged predictions.

    Args:
        model: as for ``predict``.
        x: as for ``predict``.
        y: integer labels (n,) (one-hot labels are accepted too).
        mode: as for ``predict``.
        crop_size: as for ``predict``.
        grid: as for ``predict``.
        batch_size: as for ``predict``.
        from_logits: as for ``predict``.

    Returns:
        ``{"accuracy": ..., "loss": ...}``; loss is the mean negative log-likelihood of the
        averaged probabilities (clipped at ``keras.config.epsilon()``).
    """
    probs = predict(model, x, mode, crop_size=crop_size, grid=grid, batch_size=batch_size,
                    from_logits=from_logits)
    return scores(probs, y)


class CropAveragingEval(keras.callbacks.Callback):
    """Writes ``val_tta_accuracy`` and ``val_tta_loss`` into the epoch logs.

    Evaluates the crop-averaged predictions (Krizhevsky et al. 2012) on held-out data every
    ``every`` epochs and on the last epoch; on the other epochs both keys are NaN, so
    ``History`` and ``CSVLogger`` columns stay one value per epoch. List it *before*
    ``CSVLogger`` (callbacks see the logs in order). Not registered for serialization: it
    holds a validation set, and Keras never saves callbacks.

    Args:
        x_val: preprocessed full-size validation images (n, H, W, C).
        y_val: integer (or one-hot) labels.
        mode: one of ``MODES``.
        every: evaluate every this many epochs.
        crop_size: as for ``predict``.
        grid: as for ``predict``.
        batch_size: as for ``predict``.
        from_logits: as for ``predict``.
        transform: applied to chunks of ``x_val`` before the crops (the preprocessing), so
            ``x_val`` may be a streamed source read chunk by chunk (``recipes.sources``).
    """

    CHUNK = 1024  # images transformed and evaluated at once when ``transform`` is given

    def __init__(self, x_val: Any, y_val: Any, mode: str = "ten_crop", every: int = 1, *,
                 crop_size: Any = None, grid: int = 3, batch_size: int = 256,
                 from_logits: bool = True, transform: Any = None):
        super().__init__()
        _check_mode(mode, grid)
        if isinstance(every, bool) or not isinstance(every, numbers.Integral) or every < 1:
            raise ValueError(f"every must be an integer >= 1 (epochs), got {every!r}")
        self.transform = transform
        self.x_val = x_val if transform is not None else np.asarray(x_val, dtype=np.float32)
        if len(self.x_val.shape) != 4:
            raise ValueError("CropAveragingEval needs full-size images (n, H, W, C), got shape "
                             f"{tuple(self.x_val.shape)}")
        self.from_logits = from_logits
        self.y_val = y_val
        self.mode, self.every, self.grid = mode, int(every), int(grid)
        self.crop_size, self.batch_size = crop_size, batch_size
        self._averager: _CropAverager | None = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        # Built once per fit: one trace of the crop-and-average graph for the whole run.
        shape = self.x_val.shape[1:] if self.transform is None else \
            self.transform(self.x_val[:1]).shape[1:]
        self._averager = _CropAverager(self.model, shape, self.mode, self.crop_size,
                                       self.grid, self.batch_size, self.from_logits)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is None:
            return
        last = self.params.get("epochs") if self.params else None
        if (epoch + 1) % self.every == 0 or (last is not None and epoch + 1 == last):
            if self._averager is None:
                self.on_train_begin()
            result = scores(self._probabilities(), self.y_val)
        else:
            result = {"accuracy": math.nan, "loss": math.nan}
        logs["val_tta_accuracy"] = result["accuracy"]
        logs["val_tta_loss"] = result["loss"]

    def _probabilities(self) -> np.ndarray:
        if self.transform is None:
            return self._averager(self.x_val)
        n = len(self.x_val)
        return np.concatenate([self._averager(self.transform(self.x_val[i:i + self.CHUNK]))
                               for i in range(0, n, self.CHUNK)])

    def on_train_end(self, logs: dict | None = None) -> None:
        self._averager = None  # drop the traced graph (it holds the model)
