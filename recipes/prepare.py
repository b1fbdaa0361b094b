"""The one place a run gets its data, preprocessing, model, compile settings and strategy.

CS231n's training set-up, step by step and each step once: load the splits
(:func:`load_splits`), fit the preprocessing on the training split only
(:func:`fit_preprocessor`), build the tf.data pipelines, build the model with the prior
bias, compile it (:func:`compile_model`, with :func:`jit_compile` reading
``train.jit_compile`` the same way for every caller) under the ``train.distribute``
strategy (:func:`strategy`), with the seeds and op determinism set
(:func:`set_op_determinism`). :func:`prepare` does all of it and checks the result — a
forward pass, the monitors' applicability — before any caller writes a file.

The user's own model enters here too (``model=``): a ``keras.Model`` is copied with fresh
weights by ``keras.models.clone_model`` for every run, a function is called again; what it
was compiled with (loss, optimizer class, metrics) is kept for every field the config does
not name (:func:`resolve`), and :mod:`recipes.tasks` reads the outputs' form from the labels,
the last layer and the loss. ``data=`` takes arrays, a pair of ``tf.data`` datasets or
``Splits`` (``recipes.data.from_user``).

Layer 4: imports the building blocks and the callbacks' checks, never a run or procedure.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import keras
import ml_collections
import tensorflow as tf

import models
from models import heads, registry
from models import inspect as models_inspect
from recipes import (
    configs,
    data,
    losses,
    monitors,
    optimizers,
    pipeline,
    preprocessing,
    schedules,
    tasks,
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
    task: tasks.Task | None = None  # what the outputs and the targets look like
    source: ModelSource | None = None  # where fresh copies of the model come from
    compiled: dict | None = None  # the user's compile config (keras Model.get_compile_config)
    origins: dict = dataclasses.field(default_factory=dict)  # what came from the model

    def dataset(self, x: Any, y: Any, *, training: bool, **kw: Any) -> tf.data.Dataset:
        """The config's pipeline over ``(x, y)``, with targets in the loss's form."""
        return pipeline.make(x, y, self.config, training=training,
                             num_classes=self.splits.info.num_classes,
                             preprocessor=self.preprocessor, label_form=self.task.label_form,
                             **kw)

    def fresh_model(self, cfg: ml_collections.ConfigDict | None = None, *,
                    learning_rate: Any = None) -> keras.Model:
        """A new, seeded copy of the model (fresh weights), compiled as this run compiles."""
        cfg = cfg or self.config
        keras.utils.set_random_seed(cfg.train.seed)  # the same init for every copy
        shape = pipeline.output_shape(cfg, self.splits.info.input_shape, self.preprocessor)
        model, _ = self.source.build(cfg, shape, self.splits.info.num_classes)
        init_prior_bias(model, cfg, self.source, self.splits)
        return compile_model(model, cfg, num_classes=self.splits.info.num_classes,
                             task=self.task, compiled=self.compiled,
                             learning_rate=learning_rate, steps_per_epoch=self.steps_per_epoch)


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """Where a run's models come from: the config (``models.build``), or the user.

    ``kind`` is ``config`` (``model.arch``: built in, registered, or "module:function"),
    ``model`` (a ``keras.Model``: every build is ``keras.models.clone_model`` of it, so its
    own weights are never touched) or ``function`` (called again for every build).
    """

    kind: str
    given: Any = None

    def build(self, cfg: ml_collections.ConfigDict, input_shape: tuple, num_classes: int
              ) -> tuple[keras.Model, dict | None]:
        """A fresh model and its compile config (None when it is not compiled).

        Raises:
            ValueError: the copy or the call fails, or it returns no ``keras.Model``.
        """
        if self.kind == "config":  # progressive resizing: a network for any image size
            with policy_scope(cfg.train.get("dtype_policy", "float32")):
                model = models.build(cfg.model, input_shape, num_classes,
                                     variable_size=pipeline.progressive(cfg))
        elif self.kind == "model":
            try:
                model = keras.models.clone_model(self.given)
            except Exception as e:  # noqa: BLE001 - subclassed or unserializable layers
                raise ValueError(
                    f"model: keras.models.clone_model cannot copy {self.given.name!r} "
                    f"({type(e).__name__}: {' '.join(str(e).split())[:200]}); pass a function "
                    "that builds it instead, e.g. model=make_model") from None
            return model, _compile_config(self.given)
        else:
            model = _call_builder(self.given, cfg, input_shape, num_classes)
        return model, _compile_config(model)

    def describe(self, cfg: ml_collections.ConfigDict) -> str:
        """Where the model came from, in words (for ``config.json``'s origins)."""
        if self.kind == "model":
            return (f"keras.Model {self.given.name!r} given to the run; every run gets a copy "
                    "with fresh weights (keras.models.clone_model)")
        if self.kind == "function":
            name = getattr(self.given, "__qualname__", type(self.given).__name__)
            return f"function {name} given to the run, called again for fresh weights"
        return f"model.arch={cfg.model.arch}"

    def is_users(self, cfg: ml_collections.ConfigDict) -> bool:
        """Whether the network is the user's: ``model.*`` knobs but kwargs do not apply."""
        return self.kind != "config" or models.is_user_arch(cfg.model.arch)


def model_source(model: Any) -> ModelSource:
    """``model=`` as a ModelSource: None (the config's), a ``keras.Model``, or a function.

    Raises:
        ValueError: anything else.
    """
    if model is None:
        return ModelSource("config")
    if isinstance(model, keras.Model):
        return ModelSource("model", model)
    if callable(model):
        return ModelSource("function", model)
    raise ValueError(f"model: expected a keras.Model, a function returning one, or None; got "
                     f"{type(model).__name__}")


def _call_builder(fn: Callable, cfg: ml_collections.ConfigDict, input_shape: tuple,
                  num_classes: int) -> keras.Model:
    """A user's model function: ``fn(model_cfg, shape, C, **model.kwargs)`` or ``fn()``.

    The same call and checks as a ``model.arch`` builder (``models.registry.call_builder``).
    """
    name = getattr(fn, "__qualname__", type(fn).__name__)
    kwargs = dict(cfg.model.kwargs.to_dict()) if "kwargs" in cfg.model else {}
    return registry.call_builder(fn, name, cfg.model, input_shape, num_classes, kwargs,
                                 label=f"model={name}")


def _compile_config(model: keras.Model) -> dict | None:
    """What ``model`` was compiled with (Keras's ``get_compile_config``), or None."""
    if not getattr(model, "compiled", False):
        return None
    try:
        return model.get_compile_config()
    except Exception:  # noqa: BLE001 - an unserializable loss or metric: keep the objects
        return {"optimizer": model.optimizer, "loss": model.loss, "metrics": []}


def load_splits(cfg: ml_collections.ConfigDict, splits: Any = None) -> data.Splits:
    """The run's data: ``splits`` if given, else ``cfg.dataset``'s.

    Args:
        cfg: the full config tree (``dataset.*``).
        splits: ``recipes.data.Splits`` (checked by ``data.validate_splits``), the user's
            data in any form ``recipes.data.from_user`` takes: ``(x, y)``,
            ``(x_train, y_train, x_test, y_test)``, a pair of ``tf.data`` datasets; or a
            ``dataset.name`` such as ``"folder:images"`` (read with ``cfg.dataset``'s fields).
    """
    d = cfg.dataset
    if isinstance(splits, data.Splits):
        return data.validate_splits(splits)
    if isinstance(splits, str):
        named = configs.complete({**cfg.to_dict(), "dataset": {**d.to_dict(), "name": splits}})
        return load_splits(named)
    if splits is not None:
        return data.from_user(splits, val_size=d.val_size, seed=d.seed, limit=d.limit,
                              test_size=d.test_size)
    return data.load(d.name, data_dir=d.data_dir or None, val_size=d.val_size, seed=d.seed,
                     limit=d.limit, image_size=tuple(d.image_size), color_mode=d.color_mode,
                     test_size=d.test_size)


#: Statistics fitted on a streamed source, per source object and options: one pass over
#: a folder of images serves every run of a procedure (checks, lr range, search trials).
_STREAMED_FITS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def fit_preprocessor(cfg: ml_collections.ConfigDict, x: Any,
                     method: str | None = None) -> preprocessing.Preprocessor:
    """``dataset.preprocess`` (or ``method``) fitted on the training images ``x`` only.

    A streamed ``x`` (``recipes.sources``) is read once per method and options; later calls
    get a new Preprocessor of the same statistics.
    """
    d = cfg.dataset
    method = method or d.preprocess

    def fit() -> preprocessing.Preprocessor:
        return preprocessing.fit(x, method, pca_components=d.pca_components,
                                 zca_epsilon=d.zca_epsilon)

    if not data.is_lazy(x):
        return fit()
    fits = _STREAMED_FITS.setdefault(x, {})
    key = (method, float(d.pca_components), float(d.zca_epsilon))
    if key not in fits:
        fits[key] = fit()
    pre = fits[key]
    return preprocessing.Preprocessor(pre.method, pre.params, pre.input_shape, pre.options)


def compile_model(model: keras.Model, cfg: ml_collections.ConfigDict, *, num_classes: int,
                  task: tasks.Task | None = None, compiled: dict | None = None,
                  learning_rate: Any = None, steps_per_epoch: int = 1) -> keras.Model:
    """Compiles ``model`` with the config's optimizer, loss, accuracy and ``jit_compile``.

    Args:
        model: the model (built under the run's strategy scope, if any).
        cfg: the full config tree; ``loss.name=model`` / ``optimizer.name=model`` take the
            loss / optimizer class from ``compiled``.
        num_classes: C, for the loss.
        task: the outputs' form (default: C logits, one-hot targets).
        compiled: the user's compile config, whose extra metrics are kept too.
        learning_rate: a float or ``LearningRateSchedule``; None: the config's schedule over
            ``train.epochs`` epochs of ``steps_per_epoch`` steps.
        steps_per_epoch: steps of one epoch, for the schedule.

    Returns:
        ``model``, compiled.
    """
    task = task or tasks.Task(tasks.MULTICLASS, num_classes, num_classes, "linear", "onehot")
    if learning_rate is None:
        learning_rate = schedules.get(cfg.schedule, learning_rate=cfg.optimizer.learning_rate,
                                      steps_per_epoch=steps_per_epoch, epochs=cfg.train.epochs)
    model.compile(optimizer=_optimizer(cfg, learning_rate, compiled),
                  loss=_loss(cfg, task, compiled),
                  metrics=[tasks.accuracy_metric(task), *_user_metrics(compiled)],
                  jit_compile=jit_compile(cfg.train.jit_compile))
    return model


def _optimizer(cfg: ml_collections.ConfigDict, learning_rate: Any, compiled: dict | None
               ) -> keras.optimizers.Optimizer:
    """The config's optimizer; with ``optimizer.name=model`` the user's class and settings."""
    if cfg.optimizer.name != "model":
        return optimizers.get(cfg.optimizer, learning_rate=learning_rate)
    spec = (compiled or {}).get("optimizer")
    if spec is None:
        raise ValueError("optimizer.name=model keeps the optimizer the model was compiled "
                         "with, but the model is not compiled; compile it, or name one, e.g. "
                         f"optimizer.name=adam (one of {list(optimizers.NAMES)})")
    opt = spec if isinstance(spec, keras.optimizers.Optimizer) else \
        keras.optimizers.deserialize(spec)
    conf = {**opt.get_config(), "learning_rate": learning_rate}
    if cfg.optimizer.clipnorm > 0:
        conf["clipnorm"] = float(cfg.optimizer.clipnorm)
    if cfg.optimizer.weight_decay > 0:  # Keras 3: decoupled decay on every optimizer
        conf["weight_decay"] = float(cfg.optimizer.weight_decay)
    return type(opt).from_config(conf)


def model_loss(cfg: ml_collections.ConfigDict, compiled: dict | None) -> Any:
    """The loss ``loss.name=model`` keeps (a fresh object), with ``loss.label_smoothing``.

    Returns:
        None for a config loss (``softmax``/``svm``); else the user's loss, or a one-hot
        ``CategoricalCrossentropy`` in place of a sparse one when label smoothing is asked
        for (sparse losses take none).
    """
    if cfg.loss.name != "model":
        return None
    spec = (compiled or {}).get("loss")
    if spec is None:
        raise ValueError("loss.name=model keeps the loss the model was compiled with, but the "
                         "model is not compiled; compile it, or set loss.name=softmax")
    eps = float(cfg.loss.label_smoothing)
    if eps > 0:
        if tasks.is_sparse_loss(spec):
            return keras.losses.CategoricalCrossentropy(
                from_logits=bool(tasks.loss_from_logits(spec)), label_smoothing=eps)
        if not (isinstance(spec, dict) and "label_smoothing" in spec.get("config", {})):
            raise ValueError(f"loss.label_smoothing={eps:g}: the model's loss "
                             f"{tasks.loss_name(spec)} takes no label smoothing; set "
                             "loss.label_smoothing=0")
        spec = {**spec, "config": {**spec["config"], "label_smoothing": eps}}
    if isinstance(spec, dict):
        return keras.saving.deserialize_keras_object(spec)
    return spec  # a name such as "sparse_categorical_crossentropy", or the user's object


def _loss(cfg: ml_collections.ConfigDict, task: tasks.Task, compiled: dict | None) -> Any:
    """The loss for ``task``: the model's own (``loss.name=model``) or the config's."""
    own = model_loss(cfg, compiled)
    if own is not None:
        return own
    eps = float(cfg.loss.label_smoothing)
    if task.kind != tasks.MULTICLASS:
        if cfg.loss.name in ("svm", "hinge"):
            raise ValueError(f"loss.name={cfg.loss.name}: the multiclass hinge needs one output "
                             f"per class, but the task is {task.kind}; use loss.name=softmax "
                             "(binary cross-entropy per unit)")
        return keras.losses.BinaryCrossentropy(from_logits=task.from_logits,
                                               label_smoothing=eps)
    if cfg.loss.name in ("softmax", "cross_entropy", "crossentropy") and not task.from_logits:
        return keras.losses.CategoricalCrossentropy(label_smoothing=eps)  # probabilities
    return losses.get(cfg.loss, task.num_classes)


#: The user's metrics the run's own ``accuracy`` replaces (the same number under one name).
_ACCURACY_NAMES = ("accuracy", "acc", "categorical_accuracy", "sparse_categorical_accuracy",
                   "binary_accuracy")


def _user_metrics(compiled: dict | None) -> list[Any]:
    """The user's compiled metrics, fresh, less any accuracy (the run adds its own)."""
    specs = (compiled or {}).get("metrics") or []
    if not isinstance(specs, list | tuple):
        return []  # per-output metric dicts: a single-output classifier has none
    out = []
    for spec in specs:
        if tasks.loss_name(spec) in _ACCURACY_NAMES:
            continue
        try:
            out.append(keras.saving.deserialize_keras_object(spec) if isinstance(spec, dict)
                       else keras.metrics.get(spec))
        except Exception:  # noqa: BLE001 - an unregistered custom metric: left out
            continue
    return out


def resolve(config: Any, *, model: Any = None, splits: data.Splits | None = None
            ) -> ml_collections.ConfigDict:
    """The complete config, keeping what the user's compiled model says where it says nothing.

    For every field ``config`` does not name (:func:`recipes.configs.given_paths`; a full
    tree names them all): a compiled model's loss becomes ``loss.name=model``, its optimizer
    ``optimizer.name=model`` with ``optimizer.learning_rate`` its learning rate. A model
    function or a user's ``model.arch`` builder is called once to see its compile.

    Raises:
        ValueError: a bad config or model.
    """
    given = configs.given_paths(config)
    cfg = configs.complete(config)
    source = model_source(model)
    if {"loss.name", "optimizer.name"} <= given:
        return cfg  # the config names both (a whole tree does): nothing to read, no build
    if source.kind == "model":
        spec = _compile_config(source.given)
    elif source.is_users(cfg) and splits is not None:
        spec = source.build(cfg, splits.info.input_shape, splits.info.num_classes)[1]
    else:
        spec = None
    if not spec:
        return cfg
    if spec.get("loss") is not None and "loss.name" not in given:
        cfg.loss.name = "model"
    opt = spec.get("optimizer")
    if opt is not None and "optimizer.name" not in given:
        cfg.optimizer.name = "model"
        if "optimizer.learning_rate" not in given:
            cfg.optimizer.learning_rate = _learning_rate_of(opt, cfg.optimizer.learning_rate)
    return cfg


def _learning_rate_of(spec: Any, default: float) -> float:
    """A compiled optimizer's (initial) learning rate; ``default`` if it has no number."""
    conf = spec.get_config() if isinstance(spec, keras.optimizers.Optimizer) else \
        spec.get("config", {})
    lr = conf.get("learning_rate")
    if isinstance(lr, dict):  # a schedule: its starting rate; the config's schedule takes over
        lr = lr.get("config", {}).get("initial_learning_rate")
    try:
        return float(lr)
    except (TypeError, ValueError):
        return default


def origins(cfg: ml_collections.ConfigDict, source: ModelSource, compiled: dict | None,
            task: tasks.Task, notes: list[str]) -> dict[str, Any]:
    """What came from the user's model and what from the config, for ``config.json``."""
    def spec_name(key: str) -> str:
        spec = (compiled or {}).get(key)
        if isinstance(spec, dict):
            return spec.get("class_name", "?")
        return tasks.loss_name(spec) if spec is not None else "none"

    return {
        "model": source.describe(cfg),
        "task": task.describe(),
        "loss": (f"the model's compile: {spec_name('loss')}" if cfg.loss.name == "model"
                 else f"config: loss.name={cfg.loss.name}"),
        "optimizer": (f"the model's compile: {spec_name('optimizer')}, with the config's "
                      "optimizer.learning_rate and schedule" if cfg.optimizer.name == "model"
                      else f"config: optimizer.name={cfg.optimizer.name}"),
        "metrics": ["accuracy", *[tasks.loss_name(m) for m in _user_metrics(compiled)]],
        "notes": list(notes),
    }


def init_prior_bias(model: keras.Model, cfg: ml_collections.ConfigDict, source: ModelSource,
                    splits: data.Splits) -> None:
    """Karpathy's "init well" on the built-in networks: logits' bias at the class priors.

    A user's network keeps its own initialization (the diagnosis may suggest this one).
    """
    if (cfg.train.prior_bias and cfg.loss.name == "softmax" and not source.is_users(cfg)
            and not getattr(splits.info, "multilabel", False)):
        heads.init_output_bias(model, splits.train.y, splits.info.num_classes)


def prepare(config: Any, *, model: Any = None, data: Any = None,
            splits: data.Splits | None = None) -> Prepared:
    """Completes and checks the config, loads data, fits preprocessing, builds and compiles.

    Args:
        config: a full or partial config tree (ConfigDict or nested dict).
        model: None (the config's ``model.arch``), a ``keras.Model`` (copied with fresh
            weights) or a function returning one.
        data: the user's data (``recipes.data.from_user``'s forms, ``Splits``, or a
            ``dataset.name`` string such as ``"folder:images"``).
        splits: already-loaded ``Splits`` (the older name of ``data``).

    Returns:
        A ``Prepared`` run whose model is compiled and ready for ``fit``.

    Raises:
        ValueError: any bad field, naming it and the fix.
    """
    source = model_source(model)
    loaded = load_splits(configs.complete(config), data if data is not None else splits)
    cfg = resolve(config, model=model, splits=loaded)
    if isinstance(data, str):  # data="folder:images": the config says where the data came from
        cfg.dataset.name = data
    _check_numbers(cfg)
    dtype_policy(cfg.train.get("dtype_policy", "float32"))
    pipeline.check_progressive(cfg, loaded.info.input_shape, users_model=source.is_users(cfg))
    keras.utils.set_random_seed(cfg.train.seed)  # Python, NumPy and TF seeds
    set_op_determinism(cfg.train.deterministic)
    run_strategy = strategy(cfg.train.distribute)
    pre = fit_preprocessor(cfg, loaded.train.x)
    num_classes = loaded.info.num_classes
    steps = pipeline.steps_per_epoch(len(loaded.train), cfg)
    input_shape = pipeline.output_shape(cfg, loaded.info.input_shape, pre)
    _check_tta(cfg, input_shape)
    multi_worker = isinstance(run_strategy, tf.distribute.MultiWorkerMirroredStrategy)
    with run_strategy.scope():
        built, compiled = source.build(cfg, input_shape, num_classes)
        units = None if multi_worker else _check_forward(built, input_shape, source, cfg)
        task = tasks.infer(built, num_classes=num_classes, units=units,
                           multilabel=getattr(loaded.info, "multilabel", False),
                           loss=model_loss(cfg, compiled))
        if cfg.evaluate.tta != "none" and task.kind != tasks.MULTICLASS:
            raise ValueError(f"evaluate.tta={cfg.evaluate.tta} averages class probabilities "
                             f"over crops, but the task is {task.kind}; set evaluate.tta=none")
        p = Prepared(cfg, loaded, pre, None, None, built, steps, run_strategy,
                     pipeline.EpochSeed(), task, source, compiled)
        p.train_ds = p.dataset(loaded.train.x, loaded.train.y, training=True,
                               seed=cfg.train.seed, epoch_seed=p.epoch_seed)
        if len(loaded.val):
            p.val_ds = p.dataset(loaded.val.x, loaded.val.y, training=False)
        p.epoch_seed.watch(built)  # Dropout masks too depend on (seed, epoch) alone
        init_prior_bias(built, cfg, source, loaded)
        compile_model(built, cfg, num_classes=num_classes, task=task, compiled=compiled,
                      steps_per_epoch=steps)
        if multi_worker:
            _build_before_fit(built, p.train_ds)
    notes = _fit_monitors(cfg, built, source) + _unused_model_fields(cfg, source)
    p.origins = origins(cfg, source, compiled, task, notes)
    return p


def _fit_monitors(cfg: ml_collections.ConfigDict, model: keras.Model, source: ModelSource
                  ) -> list[str]:
    """Checks the monitors apply; on a user's model turns off (and notes) those that cannot."""
    if not source.is_users(cfg):
        monitors.check_applicable(cfg.monitor, model)
        return []
    notes = []
    if not getattr(model, "inputs", None) or not models_inspect.activation_layers(model):
        if cfg.monitor.activations_every:
            cfg.monitor.activations_every = 0
            notes.append("monitor.activations_every=0: the model has no hidden activation "
                         "layer the monitor can probe (a functional or Sequential model has)")
    try:
        monitors.first_kernel_layer(model)
    except ValueError:
        if cfg.monitor.first_layer_every:
            cfg.monitor.first_layer_every = 0
            notes.append("monitor.first_layer_every=0: the model has no Dense or Conv2D kernel")
    return notes


#: The built-in networks' regularization knobs, which a user's network never sees.
_BUILT_IN_REGULARIZATION = ("l1", "l2", "dropout", "max_norm")


def _unused_model_fields(cfg: ml_collections.ConfigDict, source: ModelSource) -> list[str]:
    """Notes for regularization fields a recipe sets that cannot reach a user's network."""
    if not source.is_users(cfg):
        return []
    set_ = [f"model.{k}={cfg.model[k]:g}" for k in _BUILT_IN_REGULARIZATION if cfg.model[k]]
    return [f"{', '.join(set_)}: no effect, it configures the built-in networks; regularize "
            "inside your model"] if set_ else []


def _check_numbers(cfg: ml_collections.ConfigDict) -> None:
    """Checks the numeric fields that no factory owns (the factories check their own)."""
    t = cfg.train
    if t.epochs < 1:
        raise ValueError(f"train.epochs must be >= 1, got {t.epochs}")
    if t.verbose not in (0, 1, 2):
        raise ValueError(f"train.verbose must be 0, 1 or 2, got {t.verbose}")


def _check_forward(model: keras.Model, input_shape: tuple, source: ModelSource,
                   cfg: ml_collections.ConfigDict) -> int | None:
    """Runs the model once on two zero examples, before any file is written.

    Also builds a model given without an ``Input`` (``keras.Sequential([Dense, ...])``), so
    its outputs are known.

    Returns:
        The output's last dimension (None for variable-size inputs: fit will tell).

    Raises:
        ValueError: the model takes another input shape, or the forward pass fails.
    """
    shape = tuple(int(d) for d in input_shape)
    what = f"model.arch={model.name}" if source.kind == "config" else \
        f"model ({source.describe(cfg).split(';')[0]})"
    expected = _declared_input(model)
    if expected is not None and (len(expected) != len(shape) or any(
            e not in (None, s) for e, s in zip(expected, shape))):
        raise ValueError(f"{what}: takes inputs of shape {expected} per example, but the data's "
                         f"examples have shape {shape}; give the model keras.Input({shape}) "
                         "(add keras.layers.Flatten() first to feed images to Dense layers)")
    x = tf.zeros((2, *shape), tf.float32)  # zeros: no random state is consumed
    try:
        out = model(x, training=False)
    except Exception as e:  # noqa: BLE001 - a shape or dtype error from any layer
        text = re.sub(r"\[[\[\]\s0-9.e+-]{40,}\]", "[...]", " ".join(str(e).split()))
        raise ValueError(f"{what}: a forward pass on a batch of shape {tuple(x.shape)} failed "
                         f"({type(e).__name__}: {text[:300]}); check the model's layers "
                         "against examples of that shape") from None
    out = out[0] if isinstance(out, list | tuple) else out
    return int(out.shape[-1])


def _declared_input(model: keras.Model) -> tuple | None:
    """One example's shape as the model declares it (None: not declared, e.g. no Input)."""
    try:
        shape = model.input_shape
    except (AttributeError, ValueError):
        return None
    if isinstance(shape, list):
        return None  # several inputs: the forward pass will tell
    return tuple(shape[1:]) if shape is not None else None


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


DTYPE_POLICIES = ("float32", "mixed_bfloat16")


def dtype_policy(value: Any) -> str:
    """``train.dtype_policy``, checked: ``float32`` or ``mixed_bfloat16``.

    Raises:
        ValueError: any other value, naming the field and the choices.
    """
    if value in DTYPE_POLICIES:
        return value
    raise ValueError(f"train.dtype_policy must be one of {', '.join(DTYPE_POLICIES)}, got "
                     f"{value!r}; mixed_bfloat16 pays only on CPUs with AVX-512 BF16 or AMX")


@contextlib.contextmanager
def policy_scope(value: Any) -> Iterator[None]:
    """Builds the config's network under Keras's dtype policy ``value``, then restores it.

    Mixed precision (Micikevicius et al. 2018; Keras's ``mixed_bfloat16``): layers compute
    in bfloat16 and keep float32 weights; the built-ins' logits layer stays float32
    (``models.blocks.logits``), so the softmax and the loss see float32 logits. bfloat16
    has float32's range, so no loss scaling is needed. Keras has a global setter only,
    hence this scope.
    """
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(dtype_policy(value))
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


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
