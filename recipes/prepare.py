"""The one place a run gets its data, preprocessing, model, compile settings and strategy.

CS231n's training set-up, step by step and each step once: load the splits
(:func:`load_splits`), fit the preprocessing on the training split only
(:func:`fit_preprocessor`), build the tf.data pipelines, build the model with the prior
bias, compile it (:func:`compile_model`, with :func:`jit_compile` reading
``train.jit_compile`` the same way for every caller) under the ``train.distribute``
strategy (:func:`strategy`), with the seeds and op determinism set
(:func:`set_op_determinism`). :func:`prepare` does all of it and checks the result — a
forward pass, the monitors' applicability — before any caller writes a file.

Layer 4: imports the building blocks and the callbacks' checks, never a run or procedure.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import keras
import ml_collections
import numpy as np
import tensorflow as tf

import models
from models import heads
from recipes import (
    configs,
    data,
    losses,
    monitors,
    optimizers,
    pipeline,
    preprocessing,
    schedules,
    tta,
)


@dataclasses.dataclass
class Prepared:
    """Everything a run needs, built and checked before any file is written."""

    config: ml_collections.ConfigDict
    splits: data.Splits
    preprocessor: preprocessing.Preprocessor
    train_ds: tf.data.Dataset
    val_ds: tf.data.Dataset | None
    model: keras.Model
    steps_per_epoch: int
    strategy: tf.distribute.Strategy
    epoch_seed: pipeline.EpochSeed  # a callback for fit: epoch e's data depends on e alone


def load_splits(cfg: ml_collections.ConfigDict, splits: data.Splits | None = None
                ) -> data.Splits:
    """``splits`` checked (``data.validate_splits``) if given, else ``cfg.dataset``'s data."""
    if splits is not None:
        return data.validate_splits(splits)
    d = cfg.dataset
    return data.load(d.name, data_dir=d.data_dir or None, val_size=d.val_size, seed=d.seed,
                     limit=d.limit)


def fit_preprocessor(cfg: ml_collections.ConfigDict, x: np.ndarray,
                     method: str | None = None) -> preprocessing.Preprocessor:
    """``dataset.preprocess`` (or ``method``) fitted on the training images ``x`` only."""
    return preprocessing.fit(x, method or cfg.dataset.preprocess,
                             pca_components=cfg.dataset.pca_components,
                             zca_epsilon=cfg.dataset.zca_epsilon)


def compile_model(model: keras.Model, cfg: ml_collections.ConfigDict, *, num_classes: int,
                  learning_rate: Any = None, steps_per_epoch: int = 1) -> keras.Model:
    """Compiles ``model`` with the config's optimizer, loss, accuracy and ``jit_compile``.

    Args:
        model: the model (built under the run's strategy scope, if any).
        cfg: the full config tree.
        num_classes: C, for the loss.
        learning_rate: a float or ``LearningRateSchedule``; None: the config's schedule over
            ``train.epochs`` epochs of ``steps_per_epoch`` steps.
        steps_per_epoch: steps of one epoch, for the schedule.

    Returns:
        ``model``, compiled.
    """
    if learning_rate is None:
        learning_rate = schedules.get(cfg.schedule, learning_rate=cfg.optimizer.learning_rate,
                                      steps_per_epoch=steps_per_epoch, epochs=cfg.train.epochs)
    model.compile(optimizer=optimizers.get(cfg.optimizer, learning_rate=learning_rate),
                  loss=losses.get(cfg.loss, num_classes),
                  metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
                  jit_compile=jit_compile(cfg.train.jit_compile))
    return model


def prepare(config: Any, *, splits: data.Splits | None = None) -> Prepared:
    """Completes and checks the config, loads data, fits preprocessing, builds and compiles.

    Args:
        config: a full or partial config tree (ConfigDict or nested dict).
        splits: already-loaded data (skips ``recipes.data.load``), e.g. from a notebook.

    Returns:
        A ``Prepared`` run whose model is compiled and ready for ``fit``.

    Raises:
        ValueError: any bad field, naming it and the fix.
    """
    cfg = configs.complete(config)
    _check_numbers(cfg)
    keras.utils.set_random_seed(cfg.train.seed)  # Python, NumPy and TF seeds
    set_op_determinism(cfg.train.deterministic)
    run_strategy = strategy(cfg.train.distribute)
    splits = load_splits(cfg, splits)
    pre = fit_preprocessor(cfg, splits.train.x)
    num_classes = splits.info.num_classes
    epoch_seed = pipeline.EpochSeed()
    train_ds = pipeline.make(splits.train.x, splits.train.y, cfg, training=True,
                             num_classes=num_classes, preprocessor=pre, seed=cfg.train.seed,
                             epoch_seed=epoch_seed)
    val_ds = None
    if len(splits.val):
        val_ds = pipeline.make(splits.val.x, splits.val.y, cfg, training=False,
                               num_classes=num_classes, preprocessor=pre)
    steps = pipeline.steps_per_epoch(len(splits.train), cfg)
    input_shape = pipeline.output_shape(cfg, splits.info.input_shape, pre)
    _check_tta(cfg, input_shape)
    multi_worker = isinstance(run_strategy, tf.distribute.MultiWorkerMirroredStrategy)
    with run_strategy.scope():
        model = models.build(cfg.model, input_shape, num_classes)
        epoch_seed.watch(model)  # Dropout masks too depend on (seed, epoch) alone
        if cfg.train.prior_bias and cfg.loss.name == "softmax":
            # Karpathy's "init well": imbalanced classes start at the prior's entropy.
            heads.init_output_bias(model, splits.train.y, num_classes)
        compile_model(model, cfg, num_classes=num_classes, steps_per_epoch=steps)
        if multi_worker:
            _build_before_fit(model, train_ds)
    monitors.check_applicable(cfg.monitor, model)
    if not multi_worker:
        _check_forward(model, train_ds, num_classes)
    return Prepared(cfg, splits, pre, train_ds, val_ds, model, steps, run_strategy, epoch_seed)


def _check_numbers(cfg: ml_collections.ConfigDict) -> None:
    """Checks the numeric fields that no factory owns (the factories check their own)."""
    t = cfg.train
    if t.epochs < 1:
        raise ValueError(f"train.epochs must be >= 1, got {t.epochs}")
    if t.verbose not in (0, 1, 2):
        raise ValueError(f"train.verbose must be 0, 1 or 2, got {t.verbose}")


def _check_forward(model: keras.Model, train_ds: tf.data.Dataset, num_classes: int) -> None:
    """Runs the model once on two training examples, before any file is written.

    Raises:
        ValueError: the forward pass fails, or the output is not (batch, num_classes).
    """
    spec = train_ds.element_spec[0]
    if any(d is None for d in spec.shape[1:]):
        return  # variable-size inputs: the first batch of fit will tell
    x = tf.zeros((2, *spec.shape[1:]), spec.dtype)  # zeros: no random state is consumed
    try:
        out = model(x, training=False)
    except Exception as e:  # noqa: BLE001 - a shape or dtype error from any layer
        raise ValueError(f"model.arch={model.name}: a forward pass on a batch of shape "
                         f"{tuple(x.shape)} failed ({type(e).__name__}: "
                         f"{' '.join(str(e).split())[:300]}); check the model fields") from None
    if tuple(out.shape[1:]) != (num_classes,):
        raise ValueError(f"model.arch={model.name}: outputs of shape {tuple(out.shape[1:])} "
                         f"per example, but the data has {num_classes} classes")


def _check_tta(cfg: ml_collections.ConfigDict, input_shape: tuple) -> None:
    """Test-time crops need a known mode and image inputs (PCA flattens them)."""
    mode = cfg.evaluate.tta
    if mode == "none":
        return
    if mode not in tta.MODES:
        raise ValueError(f"evaluate.tta={mode!r} is not a crop mode; use one of "
                         f"{sorted(set(tta.MODES) | {'none'})}")
    if len(input_shape) != 3:
        raise ValueError(f"evaluate.tta={mode} needs image inputs, but dataset.preprocess="
                         f"{cfg.dataset.preprocess} turns them into vectors; use standardize "
                         "or per_channel_mean, or evaluate.tta=none")
    if cfg.evaluate.tta_every < 0:
        raise ValueError(f"evaluate.tta_every must be >= 0, got {cfg.evaluate.tta_every}")


def _build_before_fit(model: keras.Model, train_ds: tf.data.Dataset) -> None:
    """Works around Keras 3's ``fit`` under ``MultiWorkerMirroredStrategy`` (keras#20585).

    ``fit`` first reduces one distributed batch with ``strategy.reduce`` to build the model's
    metrics and loss symbolically; with MWMS that reduce raises "Attempt to convert a value
    (PerReplica...) to a Tensor". The batch only serves the build, so build here from the
    dataset's element spec and let ``fit`` skip the step (it re-checks nothing).
    """
    spec = tuple(keras.KerasTensor(s.shape, s.dtype.name) for s in train_ds.element_spec)
    model._symbolic_build(data_batch=spec)
    model.optimizer.build(model.trainable_variables)
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
    _patch_multi_worker_mean()


def _patch_multi_worker_mean() -> None:
    """Makes Keras 3 reduce a multi-worker step's scalar logs across replicas (keras#20585).

    Keras reduces each step's logs under MWMS with ``reduce("MEAN", v, axis=0)``, which
    fails on a scalar ("Invalid reduction dimension 0"). Scalars get the
    cross-replica mean instead (``axis=None``); everything else goes through unchanged. Only
    installed when a run uses ``train.distribute=multi_worker``.
    """
    from keras.src.backend.tensorflow import trainer as tf_trainer

    original = tf_trainer.reduce_per_replica
    if getattr(original, "_babysit_patched", False):
        return

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and isinstance(
                strategy, tf.distribute.MultiWorkerMirroredStrategy):
            def one(v):
                if all(t.shape.rank == 0 for t in strategy.experimental_local_results(v)):
                    return strategy.reduce("MEAN", v, axis=None)
                return original(v, strategy, reduction)
            return tf.nest.map_structure(one, values)
        return original(values, strategy, reduction)

    reduce_per_replica._babysit_patched = True
    tf_trainer.reduce_per_replica = reduce_per_replica


def set_op_determinism(enabled: bool) -> None:
    """Turns TensorFlow's op determinism on or off for this process (``train.deterministic``).

    With it on and ``train.seed`` set, every op (tf.data's parallel map included) gives the
    same result on the same hardware, so two runs of a config give bit-identical histories
    on CPU. On GPU a few ops have no deterministic kernel and raise ``UnimplementedError``
    (TF's enable_op_determinism docs list them), and others get slower.
    """
    if enabled:
        tf.config.experimental.enable_op_determinism()
    else:  # the public API can only enable; a notebook may switch back for a later run
        from tensorflow.python.framework import config as tf_config

        disable = getattr(tf_config, "disable_op_determinism", None)
        if disable is not None:
            disable()


def strategy(name: str) -> tf.distribute.Strategy:
    """Maps ``train.distribute`` onto a ``tf.distribute`` strategy."""
    if name == "none":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("train.distribute=multi_worker needs the TF_CONFIG environment "
                             "variable describing the cluster (see docs/distributed.md)")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"train.distribute: unknown strategy {name!r}; use one of "
                     "none, mirrored, multi_worker, tpu")


def jit_compile(value: Any) -> bool | str:
    """``train.jit_compile`` (a string field, so the CLI can set it) for ``compile``.

    ``"auto"``, True/False and the strings ``"true"``/``"false"`` (any case), so the CLI,
    the Python API and every caller read the field the same way.

    Raises:
        ValueError: any other value.
    """
    if isinstance(value, bool) or value == "auto":
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ValueError(f"train.jit_compile must be auto, true or false, got {value!r}")
