"""tf.data input pipelines: shuffle, batch, augment, cache, prefetch.

Augmentation uses Keras preprocessing layers on whole batches (CS231n "Data augmentation";
Krizhevsky et al. 2012; the pad-and-crop of He et al. 2016).

Training::

    from_tensor_slices -> cache (raw) -> shuffle (train.shuffle) -> batch
      -> map: to_float, one-hot                                  (parallel, deterministic)
      -> map: augmentation layers, MixUp / CutMix                 (sequential, seeded)
      -> map: preprocessor.apply                                  (parallel, deterministic)
      -> map: downscale while epoch < train.progressive_epochs    (progressive resizing)
      -> prefetch

Evaluation: batch -> map: to_float, center crop to ``augment.crop_size``, preprocess, one-hot
-> cache -> prefetch. Labels are one-hot float32 by default (MixUp/CutMix soft labels, label
smoothing and the SVM loss share one format; metrics use CategoricalAccuracy); ``label_form``
gives int32 ids (``sparse``), a (B, 1) 0/1 column (``binary``, one sigmoid output) or the
(B, K) 0/1 matrix of a multi-label problem (``multilabel``).

Lazy inputs (``recipes.sources.Images``: ``folder:``, ``tfds:``, a user's ``tf.data``) are
never materialised: batches come from ``x.dataset(...)`` zipped with the labels. Files are
read in an index order shuffled per epoch exactly as arrays are (``EpochSeed``, keyed by
(seed, epoch)); a stream, which cannot be reordered, is shuffled within consecutive blocks
(a bounded buffer: ``sources.shuffle_buffer``, min(N, 10,000, 256 MiB of examples); not a
perfect shuffle when smaller than N) keyed by (seed, epoch) as well. Evaluation reads in a
fixed order without ``cache`` (a cache would hold every example). Vectors (N, D) get no image
augmentation (only ``augment.noise_std``); the preprocessor still applies.

Why the random map is sequential: Keras' random layers keep their seed state in a variable
that every call advances. Calls that run in parallel advance it in a racy order, so the same
seed would not give the same batches. Running that one map sequentially (the rest stay
parallel, and `prefetch` overlaps it with training) makes runs reproducible.

Progressive resizing (``train.progressive_epochs`` k, ``train.progressive_scale``; fastai's
progressive resizing, Howard 2018 DAWNBench; Tan & Le 2021, EfficientNetV2): the first k epochs'
batches are downscaled (bilinear, antialiased) to ``round(scale * crop)`` after the
preprocessor, which then always sees full-size images (per-pixel statistics included). Which
epoch a batch belongs to travels with the batch from the ``EpochSeed`` iterator that drew it,
so a resumed run resizes exactly the epochs an uninterrupted one does; the dataset's spatial
dims are then unknown (None), so Keras traces one train function for both sizes.

Why MixUp/CutMix come before the preprocessor: CutMix pastes image patches, which means
nothing once PCA has flattened the image; MixUp is linear, so it commutes with every
(affine) preprocessor and its place does not matter.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from models import VARIABLE_SIZE_ARCHS, convnet
from recipes import preprocessing, sources
from recipes.preprocessing import Preprocessor

AUTOTUNE = tf.data.AUTOTUNE
FLIP_MODES = ("none", "horizontal", "vertical", "horizontal_and_vertical")
LABEL_FORMS = ("onehot", "sparse", "binary", "multilabel")
# Augmentations that only mean something for images (all but augment.noise_std).
IMAGE_AUGMENTATIONS = ("crop_padding", "crop_size", "flip", "rotation", "translation", "shear",
                       "zoom", "color_jitter", "randaugment", "erasing", "mixup", "cutmix")

# Fixed seed slot per random layer, so switching one augmentation on or off does not change
# the random stream of the others.
_SLOTS = {
    "crop": 0, "flip": 1, "rotation": 2, "translation": 3, "shear": 4, "zoom": 5,
    "color_jitter": 6, "randaugment": 7, "erasing": 8, "noise_std": 9, "mixup": 10, "cutmix": 11,
}  # fmt: skip


@keras.saving.register_keras_serializable(package="babysit")
class RandomPadCrop(keras.layers.Layer):
    """Zero-pads images by `padding` pixels, then crops a random window from each image.

    The CIFAR recipe "pad 4, random 32x32 crop" (He et al. 2016) and AlexNet-style random
    crops. Written by hand because `keras.layers.RandomCrop` draws ONE offset per call, so
    every image of a batch would get the same crop; here each image gets its own offset.
    With ``training=False`` it returns the center crop of the unpadded images.

    Args:
        padding: Zero pixels added on each side before cropping.
        height: Output height (at most the padded height).
        width: Output width (at most the padded width).
        seed: Seed of the layer's `keras.random.SeedGenerator`.
    """

    def __init__(self, padding: int, height: int, width: int, seed: int | None = None, **kw):
        super().__init__(**kw)
        self.padding, self.height, self.width, self.seed = int(padding), height, width, seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=True):
        """Crops one random window per image (NHWC batch)."""
        ops = keras.ops
        in_h, in_w = images.shape[1], images.shape[2]
        if not training:
            top, left = (in_h - self.height) // 2, (in_w - self.width) // 2
            return images[:, top : top + self.height, left : left + self.width, :]
        p = self.padding
        if p:
            images = ops.pad(images, [[0, 0], [p, p], [p, p], [0, 0]])
        batch = ops.shape(images)[0]
        tops = keras.random.randint(
            (batch,), 0, in_h + 2 * p - self.height + 1, seed=self.seed_generator, dtype="int32"
        )
        lefts = keras.random.randint(
            (batch,), 0, in_w + 2 * p - self.width + 1, seed=self.seed_generator, dtype="int32"
        )
        # tf.gather with batch_dims: ~10x faster on CPU than keras.ops.take_along_axis here.
        images = tf.gather(images, tops[:, None] + tf.range(self.height), axis=1, batch_dims=1)
        return tf.gather(images, lefts[:, None] + tf.range(self.width), axis=2, batch_dims=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.height, self.width, input_shape[3])

    def get_config(self):
        return {
            **super().get_config(),
            "padding": self.padding,
            "height": self.height,
            "width": self.width,
            "seed": self.seed,
        }


# --- validation --------------------------------------------------------------------------


def _number(
    config: Any,
    name: str,
    upper: float | None = None,
    *,
    integer: bool = False,
    below: bool = False,
) -> float:
    """Reads ``augment.<name>``; raises ValueError unless it is a number in [0, upper]."""
    value = config.augment.get(name, 0)
    kind = "an int" if integer else "a number"
    ok = isinstance(value, (int, np.integer) if integer else (int, float, np.number))
    ok = ok and not isinstance(value, (bool, np.bool_)) and value >= 0
    if ok and upper is not None:
        ok = value < upper if below else value <= upper
    if not ok:
        limit = "" if upper is None else f" and {'<' if below else '<='} {upper}"
        raise ValueError(f"augment.{name}={value!r} must be {kind} >= 0{limit} (0 turns it off).")
    return value


def _image_shape(image_shape: Any) -> tuple[int, int, int]:
    shape = tuple(int(d) for d in image_shape)
    if len(shape) != 3:
        raise ValueError(f"image_shape must be (H, W, C), got {image_shape!r}.")
    return shape  # type: ignore[return-value]


def _crop_hw(config: Any, image_shape: tuple[int, int, int]) -> tuple[int, int]:
    """The (height, width) the network sees: ``augment.crop_size``, or the image size."""
    height, width, _ = image_shape
    padding = _number(config, "crop_padding", integer=True)
    size = _number(config, "crop_size", integer=True)
    if size > min(height, width):
        padded = f" (padded: {height + 2 * padding}x{width + 2 * padding})" if padding else ""
        raise ValueError(
            f"augment.crop_size={size} is larger than the {height}x{width} images{padded}; "
            f"evaluation center-crops the unpadded images, so use crop_size <= "
            f"{min(height, width)} (0 = the image size)."
        )
    return (size, size) if size else (height, width)


def _validate_augment(config: Any, image_shape: tuple[int, int, int]) -> None:
    """Checks every ``augment.*`` field against its range and the image shape."""
    a = config.augment
    _crop_hw(config, image_shape)
    if a.get("flip", "none") not in FLIP_MODES:
        raise ValueError(f"augment.flip={a.flip!r} is unknown; use one of {', '.join(FLIP_MODES)}.")
    _number(config, "rotation", 1.0)  # fraction of a full turn
    _number(config, "translation", 1.0)
    _number(config, "shear", 1.0)
    _number(config, "zoom", 1.0, below=True)
    _number(config, "color_jitter", 1.0)
    _number(config, "noise_std")
    _number(config, "erasing", 1.0)  # a probability
    _number(config, "randaugment", integer=True)
    _number(config, "randaugment_magnitude", 1.0)
    _number(config, "mixup")
    _number(config, "cutmix", 1.0)  # keras.layers.CutMix's factor lies in [0, 1]
    channels = image_shape[-1]
    for name in ("color_jitter", "randaugment"):
        if a.get(name, 0) and channels != 3:
            raise ValueError(
                f"augment.{name}={a[name]!r} needs RGB images, but this dataset has "
                f"{channels} channel(s); set augment.{name}=0."
            )


def _batch_size(n: int, config: Any, *, training: bool = True) -> int:
    """Examples per batch: all of them with ``train.full_batch``, else ``train.batch_size``."""
    if n < 1:
        raise ValueError("The dataset is empty.")
    if config.train.get("full_batch", False):
        return n
    size = config.train.batch_size
    if isinstance(size, (bool, np.bool_)) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"train.batch_size={size!r} must be an int >= 1.")
    if training and size > n:
        raise ValueError(
            f"train.batch_size={size} is larger than the {n} training examples; lower it, "
            "or set train.full_batch=True to train on the whole set at every step."
        )
    return min(int(size), n)


def _seeds(seed: int | None) -> list[int]:
    """Independent per-layer seeds derived from one seed (`numpy.random.SeedSequence`)."""
    entropy = None if seed is None else int(seed) % 2**32
    return [int(s) for s in np.random.SeedSequence(entropy).generate_state(len(_SLOTS))]


# --- public helpers ----------------------------------------------------------------------


def augmentation_layers(
    config: Any, image_shape: tuple[int, ...], seed: int | None = None
) -> list[keras.layers.Layer]:
    """The image augmentation layers ``config.augment`` switches on, in application order.

    Images are float32 in [0, 1]; call each layer with ``training=True``. MixUp and CutMix,
    which also need the labels, come from `mixing_layers`.

    Args:
        config: The full config tree (``augment.*``, ``train.seed``).
        image_shape: (H, W, C) of the images (before any crop).
        seed: Base seed for the layers (default ``config.train.seed``).

    Returns:
        A list of layers; empty when no augmentation is on.

    Raises:
        ValueError: On an out-of-range field or one that does not fit the images.
    """
    image_shape = _image_shape(image_shape)
    _validate_augment(config, image_shape)
    a = config.augment
    seeds = _seeds(config.train.seed if seed is None else seed)
    s = {name: seeds[slot] for name, slot in _SLOTS.items()}
    kw: dict[str, Any] = {"dtype": "float32"}
    rng01 = {"value_range": (0, 1)}
    height, width, _ = image_shape
    crop = _crop_hw(config, image_shape)
    layers: list[keras.layers.Layer] = []
    if a.crop_padding or crop != (height, width):
        layers.append(RandomPadCrop(a.crop_padding, *crop, seed=s["crop"], **kw))
    if a.flip != "none":
        layers.append(keras.layers.RandomFlip(a.flip, seed=s["flip"], **kw))
    if a.rotation:
        layers.append(keras.layers.RandomRotation(a.rotation, seed=s["rotation"], **kw))
    if a.translation:
        t = a.translation
        layers.append(keras.layers.RandomTranslation(t, t, seed=s["translation"], **kw))
    if a.shear:
        layers.append(keras.layers.RandomShear(a.shear, a.shear, seed=s["shear"], **kw))
    if a.zoom:
        layers.append(keras.layers.RandomZoom(a.zoom, seed=s["zoom"], **kw))
    if a.color_jitter:
        # One strength for the four parts, like torchvision's ColorJitter(j, j, j, j / 4):
        # brightness adds U(-j/2, j/2) (Keras adds, torchvision multiplies), contrast
        # multiplies by U(1-j, 1+j), saturation by U(1-j, 1+j) (Keras' factor f scales by
        # f / (1 - f)), hue shifts by at most j/4 of the circle (Keras' factor f by f / 2).
        j = a.color_jitter
        saturation = ((1 - j) / (2 - j), (1 + j) / (2 + j))
        layers.append(
            keras.layers.RandomColorJitter(
                brightness_factor=j / 2,
                contrast_factor=j,
                saturation_factor=saturation,
                hue_factor=j / 2,
                seed=s["color_jitter"],
                **rng01,
                **kw,
            )
        )
    if a.randaugment:
        layers.append(
            keras.layers.RandAugment(
                num_ops=a.randaugment,
                factor=a.get("randaugment_magnitude", 0.5),
                seed=s["randaugment"],
                **rng01,
                **kw,
            )
        )
    if a.erasing:  # (p, p): erase with probability exactly p (a single p would draw U(0, p))
        layers.append(
            keras.layers.RandomErasing(
                factor=(a.erasing, a.erasing), seed=s["erasing"], **rng01, **kw
            )
        )
    if a.noise_std:
        layers.append(keras.layers.GaussianNoise(a.noise_std, seed=s["noise_std"], **kw))
    return layers


def mixing_layers(config: Any, seed: int | None = None) -> list[keras.layers.Layer]:
    """MixUp (``augment.mixup`` = alpha) and CutMix (``augment.cutmix``) layers, if on.

    Call them on ``{"images": x, "labels": one_hot}`` with ``training=True``; both return
    soft labels that still sum to 1. Note that Keras' CutMix draws its Beta parameter
    uniformly from [0, cutmix] for every batch, rather than using it as a fixed alpha.
    """
    _number(config, "mixup")
    _number(config, "cutmix", 1.0)
    seeds = _seeds(config.train.seed if seed is None else seed)
    layers: list[keras.layers.Layer] = []
    if config.augment.mixup:
        layers.append(
            keras.layers.MixUp(
                alpha=config.augment.mixup, seed=seeds[_SLOTS["mixup"]], dtype="float32"
            )
        )
    if config.augment.cutmix:
        layers.append(
            keras.layers.CutMix(
                factor=config.augment.cutmix, seed=seeds[_SLOTS["cutmix"]], dtype="float32"
            )
        )
    return layers


def output_shape(
    config: Any, image_shape: tuple[int, ...], preprocessor: Preprocessor | None = None
) -> tuple[int, ...]:
    """The shape of one example as the model sees it (crop, then the preprocessor).

    Args:
        config: The full config tree.
        image_shape: (H, W, C) of the dataset's images, or (D,) of its vectors.
        preprocessor: The fitted preprocessor, if any.

    Returns:
        ``(crop_h, crop_w, C)``, or the preprocessor's output for that shape (``(k,)`` PCA);
        for vectors ``(D,)`` or the preprocessor's output.

    Raises:
        ValueError: If ``augment.crop_size`` crops images whose per-pixel preprocessor
            (mean_image, pca, zca) was fitted at the full size.
    """
    if len(tuple(image_shape)) == 1:
        shape = (int(tuple(image_shape)[0]),)
        return shape if preprocessor is None else preprocessor.output_shape_for(shape)
    image_shape = _image_shape(image_shape)
    shape = (*_crop_hw(config, image_shape), image_shape[2])
    if preprocessor is None:
        return shape
    return preprocessor.output_shape_for(shape)


def steps_per_epoch(n: int, config: Any) -> int:
    """Batches per training epoch: ``ceil(n / train.batch_size)``, 1 with ``full_batch``."""
    return math.ceil(n / _batch_size(n, config))


# --- progressive resizing ----------------------------------------------------------------

#: The smallest side (pixels) of a low-resolution image that progressive resizing accepts.
PROGRESSIVE_MIN_SIDE = 8
# Preprocessors that whiten all pixels jointly (PCA flattens the image to a vector): a
# downscale does not commute with them and their output is no image to downscale.
_WHITENING = ("pca", "zca")


def _progressive_fields(config: Any) -> tuple[int, float]:
    """``train.progressive_epochs`` and ``train.progressive_scale``, checked.

    Raises:
        ValueError: epochs not an int in [0, train.epochs), a scale not in (0, 1).
    """
    t = config.train
    k, scale = t.get("progressive_epochs", 0), t.get("progressive_scale", 0.5)
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"train.progressive_epochs={k!r} must be an int >= 0: the first k "
                         "epochs train on downscaled images (0 = off).")
    epochs = t.get("epochs", 1)
    if k and isinstance(epochs, (int, np.integer)) and k >= epochs:
        raise ValueError(f"train.progressive_epochs={k} must be < train.epochs={epochs}: the "
                         "epochs after them train at full resolution; lower "
                         "progressive_epochs or raise train.epochs.")
    number = isinstance(scale, (int, float, np.number)) and not isinstance(
        scale, (bool, np.bool_))
    if not (number and 0 < scale < 1):
        raise ValueError(f"train.progressive_scale={scale!r} must be a number in (0, 1): the "
                         "side-length factor of the low-resolution epochs' images (e.g. 0.5).")
    return int(k), float(scale)


def progressive(config: Any) -> bool:
    """Whether ``train.progressive_epochs`` > 0 asks for progressive resizing (checked)."""
    return _progressive_fields(config)[0] > 0


def progressive_size(config: Any, image_shape: tuple[int, ...]) -> tuple[int, int] | None:
    """The (height, width) of the first ``train.progressive_epochs`` epochs' batches.

    Progressive resizing: fastai (Howard 2018, DAWNBench); Tan & Le 2021, EfficientNetV2.

    Args:
        config: The full config tree (``train.progressive_*``, ``augment.crop_size``,
            ``dataset.preprocess``).
        image_shape: (H, W, C) of the dataset's images, or (D,) of its vectors.

    Returns:
        ``round(scale * crop)`` per side (half up), or None when progressive resizing is off.

    Raises:
        ValueError: a field out of range, vectors, a whitening preprocessor, or a low-resolution
            side under ``PROGRESSIVE_MIN_SIDE`` pixels; naming the field and the fix.
    """
    k, scale = _progressive_fields(config)
    if not k:
        return None
    shape = tuple(int(d) for d in image_shape)
    if len(shape) != 3:
        raise ValueError(f"train.progressive_epochs={k} downscales images, but the inputs are "
                         f"{shape} vectors; set train.progressive_epochs=0.")
    method = config.dataset.get("preprocess", "none")
    if method in _WHITENING:
        raise ValueError(f"train.progressive_epochs={k} cannot downscale whitened images: "
                         f"dataset.preprocess={method} decorrelates all full-resolution pixels "
                         "jointly; use dataset.preprocess=standardize (per channel), or set "
                         "train.progressive_epochs=0.")
    crop = _crop_hw(config, shape)
    small = (math.floor(scale * crop[0] + 0.5), math.floor(scale * crop[1] + 0.5))
    if min(small) < PROGRESSIVE_MIN_SIDE:
        least = (PROGRESSIVE_MIN_SIDE - 0.5) / min(crop)
        fix = (f"use train.progressive_scale >= {math.ceil(least * 1000) / 1000:g}"
               if least < 1 else "these images are too small for it")
        raise ValueError(f"train.progressive_scale={scale:g} downscales the {crop[0]}x{crop[1]} "
                         f"crops to {small[0]}x{small[1]}; progressive resizing needs at least "
                         f"{PROGRESSIVE_MIN_SIDE} pixels a side: {fix}, or set "
                         "train.progressive_epochs=0.")
    return small


def check_progressive(config: Any, image_shape: tuple[int, ...], *,
                      users_model: bool = False) -> None:
    """Checks that the data, the preprocessing and the network allow progressive resizing.

    Progressive resizing: fastai (Howard 2018, DAWNBench); Tan & Le 2021, EfficientNetV2.
    The network must take images of two sizes: the built-in convnet (global_pool head) or
    resnet, built with ``variable_size``; a user's network or the mlp cannot.

    Args:
        config: The full config tree.
        image_shape: (H, W, C) of the dataset's images, or (D,) of its vectors.
        users_model: The network is the user's (``prepare.ModelSource.is_users``).

    Raises:
        ValueError: any reason it cannot apply, naming the field and the fix.
    """
    small = progressive_size(config, image_shape)
    if small is None:
        return
    k, arch = config.train.progressive_epochs, str(config.model.get("arch", "")).strip()
    if users_model or arch.lower() not in VARIABLE_SIZE_ARCHS:
        what = "a user's network, whose input size it fixes itself" if users_model else \
            f"model.arch={arch}, whose Dense layers fix the input size"
        raise ValueError(f"train.progressive_epochs={k} trains on images of two sizes, which "
                         f"needs model.arch convnet or resnet, not {what}; set "
                         "train.progressive_epochs=0.")
    crop = _crop_hw(config, _image_shape(image_shape))
    tta = config.get("evaluate", {}).get("tta", "none")
    if tta != "none" and crop != tuple(image_shape[:2]):
        raise ValueError(f"train.progressive_epochs={k} builds the network for any image size, "
                         f"so evaluate.tta={tta} would crop whole images instead of the "
                         f"augment.crop_size={crop[0]} crops it reads from the network's "
                         "input; set augment.crop_size=0, evaluate.tta=none or "
                         "train.progressive_epochs=0.")
    if arch.lower() != "convnet":
        return  # resnet: 'same' convolutions and a global-average-pooling head take any size
    if config.model.get("head") == "flatten":
        raise ValueError(f"train.progressive_epochs={k} with model.head=flatten: a flatten head "
                         "fixes the input size; use model.head=global_pool.")
    widths = config.model.get("widths", ())
    if isinstance(widths, (list, tuple)):
        pools = sum(convnet.pooled_stages(*crop, len(widths)))
        if min(small) < 2**pools:
            raise ValueError(f"train.progressive_scale={config.train.progressive_scale:g} gives "
                             f"{small[0]}x{small[1]} images, but the convnet pools {pools} times "
                             f"(model.widths): it needs >= {2**pools} pixels a side; raise "
                             "train.progressive_scale or set train.progressive_epochs=0.")


def _progressive_resize(size: tuple[int, int], epochs: int) -> Callable:
    """``(images, targets, epoch) -> (images, targets)``: downscaled while epoch < ``epochs``.

    Bilinear with antialiasing (``tf.image.resize``); ``tf.cond`` leaves the later epochs'
    images untouched, and its two branches' sizes make the spatial dims None.
    """
    def resize(images: tf.Tensor, targets: tf.Tensor, epoch: tf.Tensor):
        images = tf.cond(
            epoch < epochs,
            lambda: tf.image.resize(images, size, method="bilinear", antialias=True),
            lambda: images)
        return images, targets

    return resize


def _carrying(step: Callable) -> Callable:
    """``step(images, targets)`` on batches that carry their epoch as a third element."""
    def carry(images: tf.Tensor, targets: tf.Tensor, epoch: tf.Tensor):
        return (*step(images, targets), epoch)

    return carry


# --- the pipeline ------------------------------------------------------------------------


def _labels(y: np.ndarray, n: int, num_classes: int, label_form: str = "onehot") -> np.ndarray:
    """Class ids (N,) (or already one-hot / soft labels (N, num_classes)), validated.

    With ``label_form="multilabel"`` the 0/1 matrix (N, num_classes) itself.
    """
    y = np.asarray(y)
    if len(y) != n:
        raise ValueError(f"x has {n} examples but y has {len(y)}.")
    if label_form == "multilabel":
        if y.ndim != 2 or y.shape[1] != num_classes:
            raise ValueError(f"label_form='multilabel' needs a 0/1 matrix (N, {num_classes}); "
                             f"got {y.dtype} {y.shape}.")
        return y.astype(np.float32)
    if y.ndim == 2 and y.shape[1] == num_classes:
        if label_form != "onehot":
            raise ValueError(f"label_form={label_form!r} needs integer class ids (N,); got "
                             f"{y.dtype} {y.shape} (one-hot or soft labels need 'onehot').")
        return y.astype(np.float32)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(
            f"y must be integer class ids (N,) or one-hot (N, {num_classes}); got "
            f"{y.dtype} {y.shape}."
        )
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"Labels must lie in [0, {num_classes}), got [{y.min()}, {y.max()}].")
    return y.astype(np.int32)


def _one_hot(y: tf.Tensor, num_classes: int) -> tf.Tensor:
    if y.dtype.is_integer:
        return tf.one_hot(y, num_classes, dtype=tf.float32)
    return tf.cast(y, tf.float32)


def _targets(y: tf.Tensor, num_classes: int, label_form: str) -> tf.Tensor:
    """A batch of labels in ``label_form`` (see the module docstring)."""
    if label_form == "onehot":
        return _one_hot(y, num_classes)
    if label_form == "sparse":
        return y  # int32 ids (B,)
    if label_form == "binary":
        return tf.cast(y, tf.float32)[:, None]  # (B, 1): one sigmoid output
    return tf.cast(y, tf.float32)  # multilabel (B, K)


def _check_label_form(config: Any, label_form: str, num_classes: int) -> None:
    """A known ``label_form`` that fits the classes and the mixing augmentations."""
    if label_form not in LABEL_FORMS:
        raise ValueError(f"label_form={label_form!r} is unknown; use one of "
                         f"{', '.join(LABEL_FORMS)}.")
    if label_form == "binary" and num_classes != 2:
        raise ValueError(f"label_form='binary' needs 2 classes (ids 0/1), got "
                         f"num_classes={num_classes}; use 'onehot' or 'sparse'.")
    if label_form == "sparse":
        for name in ("mixup", "cutmix"):
            if config.augment.get(name, 0):
                raise ValueError(
                    f"augment.{name}={config.augment[name]!r} mixes the labels of two "
                    "examples, which needs one-hot targets, but label_form='sparse' gives "
                    f"class ids; set augment.{name}=0, or use label_form='onehot'.")


def _check_vector_augment(config: Any, shape: tuple[int, ...]) -> None:
    """Vectors take no image augmentation: any one set is a ValueError naming it."""
    a = config.augment
    for name in IMAGE_AUGMENTATIONS:
        value = a.get(name, "none" if name == "flip" else 0)
        if value not in ("none", 0, 0.0, None):
            off = "'none'" if name == "flip" else "0"
            raise ValueError(
                f"augment.{name}={value!r} needs images, but the inputs are {shape} vectors; "
                f"set augment.{name}={off} (augment.noise_std is the one that applies).")
    _number(config, "noise_std")


def _vector_layers(config: Any, seed: int | None) -> list[keras.layers.Layer]:
    """The one augmentation that vectors take: ``augment.noise_std`` (GaussianNoise)."""
    if not config.augment.get("noise_std", 0):
        return []
    s = _seeds(config.train.seed if seed is None else seed)[_SLOTS["noise_std"]]
    return [keras.layers.GaussianNoise(config.augment.noise_std, seed=s, dtype="float32")]


def _block_shuffle(pairs: tf.data.Dataset, block: int, key: tf.Tensor) -> tf.data.Dataset:
    """A stream shuffled within consecutive blocks of ``block`` examples (a bounded buffer).

    Each block is permuted by a stateless shuffle keyed by (``key``, block number); the
    blocks keep their stream order, so it is a perfect shuffle only when N fits one block
    (``sources.shuffle_buffer``: min(N, 10,000, 256 MiB of examples); a block and its
    permuted copy are in memory at once). Written by hand rather than ``Dataset.shuffle``:
    that one's seed must be a Python int (TF's ``get_seed`` refuses a tensor under a global
    seed of 0), so its order would depend on how many epochs this process has run, and a
    resumed run would see other data.
    """
    def permute(number, batch):
        idx = tf.random.experimental.stateless_shuffle(
            tf.range(tf.shape(batch[1])[0]),
            seed=tf.random.experimental.stateless_fold_in(key, number))
        return tf.data.Dataset.from_tensor_slices(tf.nest.map_structure(
            lambda t: tf.gather(t, idx), batch))

    return pairs.batch(block).enumerate().flat_map(permute)


def _tagged(ds: tf.data.Dataset, epoch: tf.Tensor, tag: bool) -> tf.data.Dataset:
    """``ds``'s elements with ``epoch`` appended to each (``tag``), or ``ds`` as it is."""
    if not tag:
        return ds
    tagged = tf.data.Dataset.zip((ds, tf.data.Dataset.from_tensors(epoch).repeat()))
    if not isinstance(ds.element_spec, tuple):
        return tagged  # (index, epoch)
    return tagged.map(lambda element, e: (*element, e))  # ((x, y), epoch) -> (x, y, epoch)


class EpochSeed(keras.callbacks.Callback):
    """Keys each training epoch's shuffle order and augmentation draws by its epoch number.

    ``Dataset.shuffle(reshuffle_each_iteration=True)`` and Keras' random layers draw from
    counters that start at zero in every new process, so a run resumed after epoch 2 would
    see epoch 1's order again. Here epoch ``e`` uses ``stateless_shuffle(seed=(seed, e))``
    and every watched random layer's ``SeedGenerator`` — the augmentation layers, and the
    model's Dropout layers (``watch(model)``), whose state ``BackupAndRestore`` does not
    save — is reset to ``(its seed, e * 2**20)`` in ``on_epoch_begin``: the data of an
    epoch no longer depends on what ran before it, so ``BackupAndRestore`` resumes bit
    for bit (Keras and tf.data offer no such hook).
    Keras builds a new iterator over the training set at the start of every epoch, after
    ``on_epoch_begin``, so the prefetch buffer never holds a batch of the wrong epoch.
    Used without the callback, every new iterator advances the epoch by itself.
    """

    _DRAWS_PER_EPOCH = 2**20  # counter space per epoch; far above any epoch's draws

    def __init__(self):
        super().__init__()
        with tf.init_scope():
            self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="data_epoch")
        self._generators: list[tuple[Any, np.ndarray]] = []

    def watch(self, layers: keras.layers.Layer | list[keras.layers.Layer]) -> None:
        """Registers the seed generators of ``layers`` (a model, or a list) and sublayers."""
        for layer in layers if isinstance(layers, list) else [layers]:
            for sub in layer._flatten_layers(include_self=True):
                for generator in getattr(sub, "_seed_generators", []):
                    self._generators.append((generator, np.array(generator.state.numpy())))

    def batches(self, x: np.ndarray | sources.Images, labels: np.ndarray, batch: int, *,
                shuffle: bool, seed: int, with_epoch: bool = False) -> tf.data.Dataset:
        """Batches of ``(images, labels)`` in an order that depends on (seed, epoch) only.

        With ``with_epoch`` each batch is ``(images, labels, epoch)``: the int64 epoch the
        iterator that drew it was created for (progressive resizing reads it).
        """
        if sources.is_lazy(x):
            return self._lazy_batches(x, labels, batch, shuffle=shuffle, seed=seed,
                                      with_epoch=with_epoch)
        n = len(x)
        with tf.init_scope():
            x_t, y_t = tf.constant(x), tf.constant(labels)
            seed_t = tf.constant(int(seed), tf.int64)

        def order(_):
            # Each new iterator (one per epoch in fit) takes the epoch number and advances
            # it, so the order changes every epoch even when no callback sets it.
            epoch = self.epoch.assign_add(1) - 1
            idx = tf.range(n, dtype=tf.int64)
            if shuffle:
                key = tf.stack([seed_t, epoch])
                idx = tf.random.experimental.stateless_shuffle(idx, seed=key)
            return _tagged(tf.data.Dataset.from_tensor_slices(idx), epoch, with_epoch)

        ds = tf.data.Dataset.from_tensors(0).flat_map(order).batch(batch)
        # flat_map hides the length; Keras would learn it by running out of data (and warn).
        ds = ds.apply(tf.data.experimental.assert_cardinality(math.ceil(n / batch)))

        def gather(i, *epoch):
            return (tf.gather(x_t, i), tf.gather(y_t, i), *(e[0] for e in epoch))

        return ds.map(gather, num_parallel_calls=AUTOTUNE, deterministic=True)

    def _lazy_batches(self, x: sources.Images, labels: np.ndarray, batch: int, *,
                      shuffle: bool, seed: int, with_epoch: bool = False) -> tf.data.Dataset:
        """`batches` of lazy ``x``, read as the epoch comes, never all in memory.

        Random-access ``x`` (files) is read in the index order `batches` uses for arrays;
        a stream goes through `_block_shuffle`, keyed by (seed, epoch) too.
        """
        n, buffer = len(x), sources.shuffle_buffer(x)
        with tf.init_scope():
            y_t = tf.constant(labels)
            seed_t = tf.constant(int(seed), tf.int64)

        def examples(_):
            epoch = self.epoch.assign_add(1) - 1  # as in `batches`: one epoch per iterator
            key = tf.stack([seed_t, epoch])
            if x.random_access:
                idx = tf.range(n, dtype=tf.int64)
                if shuffle:
                    idx = tf.random.experimental.stateless_shuffle(idx, seed=key)
                targets = tf.data.Dataset.from_tensor_slices(tf.gather(y_t, idx))
                pairs = tf.data.Dataset.zip((x.dataset(order=idx), targets))
                return _tagged(pairs, epoch, with_epoch)
            pairs = tf.data.Dataset.zip((x.dataset(), tf.data.Dataset.from_tensor_slices(y_t)))
            return _tagged(_block_shuffle(pairs, buffer, key) if shuffle else pairs, epoch,
                           with_epoch)

        ds = tf.data.Dataset.from_tensors(0).flat_map(examples).batch(batch)
        if with_epoch:  # one epoch per batch, not one per example
            ds = ds.map(lambda images, targets, epoch: (images, targets, epoch[0]))
        return ds.apply(tf.data.experimental.assert_cardinality(math.ceil(n / batch)))

    def set_epoch(self, epoch: int) -> None:
        """Points the pipeline at epoch ``epoch`` (0-based)."""
        self.epoch.assign(epoch)
        for generator, initial in self._generators:
            state = initial.copy()
            state[1] = initial[1] + epoch * self._DRAWS_PER_EPOCH
            generator.state.assign(state)

    def on_epoch_begin(self, epoch, logs=None):
        self.set_epoch(epoch)


def make(
    x: np.ndarray | sources.Images,
    y: np.ndarray,
    config: Any,
    *,
    training: bool,
    num_classes: int,
    preprocessor: Preprocessor | None = None,
    seed: int | None = None,
    epoch_seed: EpochSeed | None = None,
    label_form: str = "onehot",
) -> tf.data.Dataset:
    """Builds the input pipeline of one split.

    Args:
        x: NHWC images, uint8 or float32 in [0, 1], or (N, D) vectors; an array or lazy
            ``sources.Images`` (streamed, never materialised).
        y: Integer class ids (N,), or one-hot / soft labels (N, num_classes); with
            ``label_form="multilabel"`` a 0/1 matrix (N, num_classes).
        config: The full config tree (``augment.*``, ``train.batch_size``,
            ``train.full_batch``, ``train.shuffle``, ``train.seed``).
        training: Shuffle and augment (True), or a fixed-order evaluation pipeline (False).
        num_classes: Depth of the one-hot labels (K labels for ``multilabel``).
        preprocessor: Fitted on the training images; applied to every batch.
        seed: Seed for shuffling and augmentation (default ``config.train.seed``).
        epoch_seed: For training: makes epoch ``e``'s order and augmentation a function of
            ``(seed, e)`` alone, so a run resumed at epoch ``e`` sees the same data as an
            uninterrupted one; pass the same object to ``fit`` as a callback. Without it,
            ``Dataset.shuffle`` reshuffles on every iteration of this dataset object (lazy
            ``x``, or ``train.progressive_epochs`` > 0: a private ``EpochSeed`` advances with
            every iteration).
        label_form: ``onehot`` (float32 (B, C), the default), ``sparse`` (int32 ids (B,);
            MixUp/CutMix refused), ``binary`` (float32 (B, 1) of 0/1 ids, for one sigmoid
            output) or ``multilabel`` (float32 (B, K) of the 0/1 matrix ``y``).

    Returns:
        A dataset of ``(inputs float32, labels)`` batches. With the same seed two pipelines
        yield identical batches, epoch after epoch (``train.progressive_epochs``: the first
        epochs' training images downscaled, ``progressive_size``; spatial dims then None).

    Raises:
        ValueError: On a config field out of range or inconsistent with the data.
    """
    x = x if sources.is_lazy(x) else np.asarray(x)
    if x.ndim not in (2, 4):
        raise ValueError(f"x must be a NHWC batch of images or (N, D) vectors, got shape "
                         f"{x.shape}.")
    n, shape = len(x), tuple(int(d) for d in x.shape[1:])
    labels = _labels(y, n, num_classes, label_form)
    _check_label_form(config, label_form, num_classes)
    if len(shape) == 1:
        _check_vector_augment(config, shape)
    seed = config.train.seed if seed is None else seed
    batch = _batch_size(n, config, training=training)
    output_shape(config, shape, preprocessor)  # validates crop vs preprocessor

    def to_float(images, targets):
        return preprocessing.to_float(images), _targets(targets, num_classes, label_form)

    def preprocess(images, targets):
        if preprocessor is not None:
            images = preprocessor.apply(images)
        return tf.cast(images, tf.float32), targets

    if training:
        ds = _training_batches(x, labels, config, shape, batch, seed, epoch_seed,
                               (to_float, preprocess))
    else:
        crop = _crop_hw(config, shape) if len(shape) == 3 else None
        ds = _evaluation_batches(x, labels, crop, shape, batch, (to_float, preprocess))
    options = tf.data.Options()
    options.deterministic = True
    return ds.prefetch(AUTOTUNE).with_options(options)


_PARALLEL = {"num_parallel_calls": AUTOTUNE, "deterministic": True}


def _training_batches(x: np.ndarray | sources.Images, labels: np.ndarray, config: Any,
                      image_shape: tuple, batch: int, seed: int, epoch_seed: EpochSeed | None,
                      steps: tuple[Callable, Callable]) -> tf.data.Dataset:
    """Shuffled batches, as floats, augmented (sequentially), then preprocessed.

    With ``train.progressive_epochs`` k, the first k epochs' batches are then downscaled
    (`progressive_size`), by the epoch their `EpochSeed` iterator carries.
    """
    to_float, preprocess = steps
    small = progressive_size(config, image_shape)  # None: off (vectors: refused if on)
    if len(image_shape) == 3:
        image_layers = augmentation_layers(config, image_shape, seed)
        mix_layers = mixing_layers(config, seed)
    else:  # vectors: `make` has refused every image augmentation
        image_layers, mix_layers = _vector_layers(config, seed), []

    def augment(images, targets):
        for layer in image_layers:
            images = layer(images, training=True)
        for layer in mix_layers:
            mixed = layer({"images": images, "labels": targets}, training=True)
            images, targets = mixed["images"], mixed["labels"]
        return images, targets

    shuffle, tag = config.train.get("shuffle", True), small is not None
    if epoch_seed is not None:
        epoch_seed.watch(image_layers + mix_layers)
        ds = epoch_seed.batches(x, labels, batch, shuffle=shuffle, seed=seed, with_epoch=tag)
    elif sources.is_lazy(x) or tag:  # an epoch order (and progressive: the epoch number)
        ds = EpochSeed().batches(x, labels, batch, shuffle=shuffle, seed=seed, with_epoch=tag)
    else:
        ds = tf.data.Dataset.from_tensor_slices((x, labels)).cache()
        if shuffle:
            ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
        ds = ds.batch(batch)
    step = _carrying if tag else (lambda fn: fn)
    ds = ds.map(step(to_float), **_PARALLEL)
    if image_layers or mix_layers:
        ds = ds.map(step(augment), num_parallel_calls=None)  # sequential: module docstring
    ds = ds.map(step(preprocess), **_PARALLEL)
    if tag:
        ds = ds.map(_progressive_resize(small, config.train.progressive_epochs), **_PARALLEL)
    return ds


def _evaluation_batches(x: np.ndarray | sources.Images, labels: np.ndarray,
                        crop: tuple | None, image_shape: tuple, batch: int,
                        steps: tuple[Callable, Callable]) -> tf.data.Dataset:
    """Fixed-order batches, as floats, centre-cropped to the training crop, preprocessed.

    ``crop`` None (vectors) or the image size crops nothing.
    """
    to_float, preprocess = steps
    center = None
    if crop is not None and crop != image_shape[:2]:
        center = keras.layers.CenterCrop(*crop, dtype="float32")

    def evaluate(images, targets):
        images, targets = to_float(images, targets)
        if center is not None:
            images = center(images)
        return preprocess(images, targets)

    if sources.is_lazy(x):  # no cache: it would end up holding every example
        pairs = tf.data.Dataset.zip((x.dataset(), tf.data.Dataset.from_tensor_slices(labels)))
        # A stream's length is unknown to tf.data but known here (its labels were read):
        # said, Keras sizes the epoch up front instead of running into the end of the data.
        known = tf.data.experimental.assert_cardinality(math.ceil(len(labels) / batch))
        return pairs.batch(batch).apply(known).map(evaluate, **_PARALLEL)
    ds = tf.data.Dataset.from_tensor_slices((x, labels))
    return ds.batch(batch).map(evaluate, **_PARALLEL).cache()
