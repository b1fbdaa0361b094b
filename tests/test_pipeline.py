"""Tests for recipes.pipeline: batching, shuffling, augmentation, one-hot labels, errors."""

import numpy as np
import pytest
import tensorflow as tf

from recipes import pipeline, preprocessing
from recipes.configs import base

NUM_CLASSES = 4


def _config(**augment):
    c = base.get_config()
    c.train.batch_size = 4
    c.train.shuffle = False
    for key, value in augment.items():
        c.augment[key] = value
    return c


def _rgb(n=8, size=8, seed=0):
    # Values in [0.2, 0.7] and smooth-ish, so that even contrast/auto-contrast ops change it.
    rng = np.random.default_rng(seed)
    return (rng.uniform(0.2, 0.7, (n, size, size, 3))).astype("float32")


def _gray_uint8(n=8, size=8, seed=0):
    return np.random.default_rng(seed).integers(40, 200, (n, size, size, 1), dtype=np.uint8)


def _labels(n=8):
    return np.arange(n) % NUM_CLASSES


def _epoch(ds):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return np.concatenate(xs), np.concatenate(ys)


def _make(x, config, training=True, preprocessor=None, seed=None, y=None):
    y = _labels(len(x)) if y is None else y
    return pipeline.make(
        x,
        y,
        config,
        training=training,
        num_classes=NUM_CLASSES,
        preprocessor=preprocessor,
        seed=seed,
    )


def test_no_augmentation_gives_float_images_and_one_hot_labels():
    x = _gray_uint8(10)
    ds = _make(x, _config(), training=True)
    assert ds.element_spec[0].dtype == tf.float32 and ds.element_spec[1].dtype == tf.float32
    images, labels = _epoch(ds)
    np.testing.assert_allclose(images, x / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(labels, np.eye(NUM_CLASSES)[_labels(10)])
    assert [len(b[0]) for b in ds] == [4, 4, 2]
    assert pipeline.steps_per_epoch(10, _config()) == 3


HEAVY = dict(
    crop_padding=2,
    crop_size=6,
    flip="horizontal",
    rotation=0.1,
    noise_std=0.1,
    erasing=0.5,
    color_jitter=0.3,
    mixup=0.4,
)


def test_augmentation_changes_training_but_never_eval_batches():
    x = _rgb(8)
    pre = preprocessing.fit(x, "standardize")
    config = _config(**HEAVY)
    train_images, train_labels = _epoch(_make(x, config, training=True, preprocessor=pre))
    assert train_images.shape == (8, 6, 6, 3)
    center = x[:, 1:7, 1:7]  # eval center-crops to crop_size, like training's output size
    assert np.abs(train_images - pre.transform(center)).max() > 0.5
    assert not np.allclose(train_labels, np.eye(NUM_CLASSES)[_labels()])  # MixUp mixed them
    eval_ds = _make(x, config, training=False, preprocessor=pre)
    for _ in range(2):
        images, labels = _epoch(eval_ds)
        np.testing.assert_array_equal(images, pre.apply(center).numpy())
        np.testing.assert_allclose(images, pre.transform(center), atol=1e-5)
        np.testing.assert_array_equal(labels, np.eye(NUM_CLASSES)[_labels()])


def test_eval_without_crop_equals_preprocessed_input():
    x = _gray_uint8(7)
    pre = preprocessing.fit(x, "zca")
    config = _config(flip="horizontal", noise_std=0.3, mixup=1.0, cutmix=1.0)
    config.train.batch_size = 64  # larger than an eval split is fine: one smaller batch
    images, _ = _epoch(_make(x, config, training=False, preprocessor=pre))
    np.testing.assert_array_equal(images, pre.apply(x).numpy())


def test_same_seed_same_batches_different_seed_different():
    x = _rgb(16)
    config = _config(**HEAVY, translation=0.1, cutmix=0.5)
    config.train.shuffle = True

    def run(seed):
        ds = _make(x, config, seed=seed)
        return [_epoch(ds) for _ in range(2)]  # two epochs

    a, b, c = run(3), run(3), run(4)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(a[0][0], c[0][0])
    assert not np.array_equal(a[0][0], a[1][0])  # augmentation is redrawn every epoch


def test_seed_defaults_to_train_seed():
    x = _rgb(8)
    config = _config(flip="horizontal", noise_std=0.1)
    config.train.seed = 7
    np.testing.assert_array_equal(_epoch(_make(x, config))[0], _epoch(_make(x, config, seed=7))[0])


def _order(ds):
    return [int(i) for i in np.argmax(_epoch(ds)[1], axis=1)]


def test_shuffle_on_reorders_between_epochs_off_keeps_order():
    n = 12
    x = _gray_uint8(n)
    config = _config()

    def orders(shuffle):
        config.train.shuffle = shuffle
        # Label = example index, so the one-hot labels tell which example came when.
        ds = pipeline.make(x, np.arange(n), config, training=True, num_classes=n, seed=0)
        return [_order(ds) for _ in range(3)]

    shuffled = orders(True)
    assert all(sorted(o) == list(range(n)) for o in shuffled)  # a permutation each epoch
    assert len({tuple(o) for o in shuffled}) == 3  # a new order every epoch
    assert orders(False) == [list(range(n))] * 3  # the "cyclic loss" setting: fixed order


def test_full_batch_is_one_batch_of_everything():
    x = _gray_uint8(10)
    config = _config(flip="vertical")
    config.train.full_batch = True
    config.train.batch_size = 3
    batches = list(_make(x, config))
    assert len(batches) == 1 and batches[0][0].shape == (10, 8, 8, 1)
    assert pipeline.steps_per_epoch(10, config) == 1


@pytest.mark.parametrize("field,alpha", [("mixup", 0.4), ("cutmix", 1.0)])
def test_mixing_gives_soft_labels_summing_to_one(field, alpha):
    x = _rgb(16)
    _, labels = _epoch(_make(x, _config(**{field: alpha})))
    np.testing.assert_allclose(labels.sum(axis=1), 1.0, atol=1e-5)
    assert labels.min() >= 0 and labels.max() <= 1 + 1e-6
    assert np.any((labels > 1e-3) & (labels < 1 - 1e-3))  # some labels really are soft


# (field, value, channels): every augmentation field, on RGB and where it applies on gray.
FIELDS = [
    ("crop_padding", 2, 3), ("crop_padding", 2, 1), ("crop_size", 6, 3),
    ("flip", "horizontal", 3), ("flip", "vertical", 1), ("flip", "horizontal_and_vertical", 3),
    ("rotation", 0.2, 3), ("rotation", 0.2, 1), ("translation", 0.2, 3), ("translation", 0.2, 1),
    ("shear", 0.3, 3), ("shear", 0.3, 1), ("zoom", 0.3, 3), ("zoom", 0.3, 1),
    ("color_jitter", 0.5, 3), ("noise_std", 0.1, 3), ("noise_std", 0.1, 1),
    ("erasing", 1.0, 3), ("erasing", 1.0, 1), ("randaugment", 2, 3),
    ("mixup", 0.5, 3), ("mixup", 0.5, 1), ("cutmix", 1.0, 3), ("cutmix", 1.0, 1),
]  # fmt: skip


@pytest.mark.parametrize("field,value,channels", FIELDS)
def test_each_augmentation_field_builds_runs_and_changes_the_batch(field, value, channels):
    x = _rgb(8) if channels == 3 else _gray_uint8(8)
    config = _config(**{field: value})
    layers = pipeline.augmentation_layers(config, x.shape[1:])
    assert len(layers) == (0 if field in ("mixup", "cutmix") else 1)
    images, _ = _epoch(_make(x, config))
    expected_size = 6 if field == "crop_size" else 8
    assert images.shape == (8, expected_size, expected_size, channels)
    assert images.dtype == np.float32
    reference = preprocessing.to_float(x)
    if field == "crop_size":  # a random crop differs from the center crop of eval
        reference = _epoch(_make(x, config, training=False))[0]
    assert np.abs(images - reference).max() > 1e-3


def test_random_pad_crop_is_per_image_and_a_window_of_the_padded_image():
    x = np.repeat(_rgb(1, size=6), 16, axis=0)  # 16 copies of one image
    layer = pipeline.RandomPadCrop(2, 6, 6, seed=1)
    out = layer(tf.constant(x), training=True).numpy()
    assert out.shape == x.shape
    assert len({o.tobytes() for o in out}) > 4  # keras.layers.RandomCrop would give 1
    padded = np.pad(x[0], ((2, 2), (2, 2), (0, 0)))
    windows = {padded[i : i + 6, j : j + 6].tobytes() for i in range(5) for j in range(5)}
    assert all(o.tobytes() in windows for o in out)
    center = layer(tf.constant(x), training=False).numpy()
    np.testing.assert_array_equal(center, x)
    clone = pipeline.RandomPadCrop.from_config(layer.get_config())
    assert (clone.padding, clone.height, clone.width, clone.seed) == (2, 6, 6, 1)


def test_default_config_has_no_augmentation():
    assert pipeline.augmentation_layers(base.get_config(), (8, 8, 1)) == []
    assert pipeline.mixing_layers(base.get_config()) == []


def test_output_shape():
    x = _rgb(8)
    config = _config(crop_size=6, crop_padding=2)
    assert pipeline.output_shape(config, (8, 8, 3)) == (6, 6, 3)
    assert pipeline.output_shape(config, (8, 8, 3), preprocessing.fit(x, "standardize")) == (
        6,
        6,
        3,
    )
    pca = preprocessing.fit(x, "pca", pca_components=5)
    assert pipeline.output_shape(_config(crop_padding=2), (8, 8, 3), pca) == (5,)
    images, _ = _epoch(_make(x, _config(crop_padding=2, flip="horizontal"), preprocessor=pca))
    assert images.shape == (8, 5)
    for method in ("mean_image", "pca", "zca"):
        with pytest.raises(ValueError, match="crop_size"):
            pipeline.output_shape(config, (8, 8, 3), preprocessing.fit(x, method))
        with pytest.raises(ValueError, match="crop_size"):
            _make(x, config, preprocessor=preprocessing.fit(x, method))


BAD = [
    ({"augment.color_jitter": 0.3}, 1, "augment.color_jitter"),
    ({"augment.randaugment": 2}, 1, "augment.randaugment"),
    ({"augment.crop_size": 9}, 3, "augment.crop_size"),
    ({"augment.crop_size": 20, "augment.crop_padding": 4}, 3, "augment.crop_size"),
    ({"augment.crop_padding": -1}, 3, "augment.crop_padding"),
    ({"augment.crop_size": -2}, 3, "augment.crop_size"),
    ({"augment.flip": "diagonal"}, 3, "augment.flip"),
    ({"augment.rotation": -0.1}, 3, "augment.rotation"),
    ({"augment.translation": -0.1}, 3, "augment.translation"),
    ({"augment.shear": -0.1}, 3, "augment.shear"),
    ({"augment.zoom": -0.1}, 3, "augment.zoom"),
    ({"augment.zoom": 1.0}, 3, "augment.zoom"),
    ({"augment.noise_std": -0.1}, 3, "augment.noise_std"),
    ({"augment.erasing": -0.5}, 3, "augment.erasing"),
    ({"augment.erasing": 1.5}, 3, "augment.erasing"),
    ({"augment.color_jitter": -0.1}, 3, "augment.color_jitter"),
    ({"augment.randaugment": -1}, 3, "augment.randaugment"),
    ({"augment.randaugment_magnitude": 1.5}, 3, "augment.randaugment_magnitude"),
    ({"augment.mixup": -0.2}, 3, "augment.mixup"),
    ({"augment.cutmix": -1.0}, 3, "augment.cutmix"),
    ({"augment.cutmix": 2.0}, 3, "augment.cutmix"),
    ({"train.batch_size": 0}, 3, "train.batch_size"),
    ({"train.batch_size": -4}, 3, "train.batch_size"),
    ({"train.batch_size": 9}, 3, "train.batch_size"),
]


@pytest.mark.parametrize("overrides,channels,field", BAD, ids=[b[2] for b in BAD])
def test_bad_config_raises_naming_the_field(overrides, channels, field):
    x = _rgb(8) if channels == 3 else _gray_uint8(8)
    config = _config()
    for path, value in overrides.items():
        section, key = path.split(".")
        config[section][key] = value
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        _make(x, config)
    if field.startswith("train."):
        with pytest.raises(ValueError, match=field.replace(".", r"\.")):
            pipeline.steps_per_epoch(len(x), config)
    else:
        with pytest.raises(ValueError, match=field.replace(".", r"\.")):
            pipeline.augmentation_layers(config, x.shape[1:])


def test_bad_labels_raise():
    x = _rgb(8)
    with pytest.raises(ValueError, match="Labels"):
        _make(x, _config(), y=np.full(8, NUM_CLASSES))
    with pytest.raises(ValueError, match="examples"):
        _make(x, _config(), y=np.zeros(7, int))
    soft = np.full((8, NUM_CLASSES), 1.0 / NUM_CLASSES, np.float32)  # soft labels pass through
    np.testing.assert_allclose(_epoch(_make(x, _config(), y=soft))[1], soft)


def _epoch_batches(ds):
    return [(xb.numpy(), yb.numpy()) for xb, yb in ds]


def test_epoch_seed_makes_an_epoch_depend_on_its_number_only():
    """A pipeline resumed at epoch 2 yields what an uninterrupted one yields at epoch 2."""
    rng = np.random.default_rng(0)
    x = rng.random((40, 8, 8, 3), dtype=np.float32)
    y = np.arange(40) % 4
    cfg = base.get_config()
    cfg.train.batch_size = 16
    cfg.augment.flip = "horizontal"
    cfg.augment.noise_std = 0.1
    cfg.augment.translation = 0.2

    def build():
        seed = pipeline.EpochSeed()
        return seed, pipeline.make(x, y, cfg, training=True, num_classes=4, epoch_seed=seed)

    seed_a, ds_a = build()
    epochs_a = []
    for epoch in range(3):
        seed_a.set_epoch(epoch)
        epochs_a.append(_epoch_batches(ds_a))
    seed_b, ds_b = build()
    seed_b.set_epoch(2)
    resumed = _epoch_batches(ds_b)
    for (xa, ya), (xb, yb) in zip(epochs_a[2], resumed, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    # Different epochs differ in order and augmentation.
    assert not np.array_equal(epochs_a[0][0][0], epochs_a[1][0][0])


def test_epoch_seed_advances_by_itself_without_the_callback():
    x = np.arange(32, dtype=np.float32).reshape(32, 1, 1, 1) / 32
    y = np.zeros(32, dtype=np.int64)
    cfg = base.get_config()
    cfg.train.batch_size = 32
    seed = pipeline.EpochSeed()
    ds = pipeline.make(x, y, cfg, training=True, num_classes=2, epoch_seed=seed)
    orders = [next(iter(ds))[0].numpy().ravel() for _ in range(3)]
    assert not np.array_equal(orders[0], orders[1])
    assert not np.array_equal(orders[1], orders[2])
    assert sorted(orders[0]) == sorted(orders[1])


def test_epoch_seed_pipeline_states_its_length():
    """Keras warns "input ran out of data" on every fit of an unknown-length dataset."""
    x = np.zeros((50, 2, 2, 1), dtype=np.float32)
    cfg = base.get_config()
    cfg.train.batch_size = 16
    ds = pipeline.make(x, np.zeros(50, np.int64), cfg, training=True, num_classes=2,
                       epoch_seed=pipeline.EpochSeed())
    assert int(ds.cardinality()) == 4 == len(list(ds))
