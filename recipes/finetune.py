"""Transfer learning: reuse a trained network's features on a new task.

Lecture: "Transfer learning" ("you rarely train from scratch": take a network trained on a
big dataset, chop off the classifier, and either train a new linear classifier on the frozen
features, or fine-tune more layers with a lower learning rate when there is more data);
Yosinski et al. 2014, "How transferable are features in deep neural networks?".

Two modes, one new head (``Dense(num_classes, name="logits")``, optionally after dropout):

  * ``feature_extractor``: the body is frozen; only the head is trained. The body's output
    can be computed once (``precompute``), so training the head costs a linear model's time.
  * ``finetune``: phase 1 trains the head on the frozen body until it has settled
    (``head_epochs``; a random head's large gradients would otherwise wreck the pretrained
    features); phase 2 unfreezes the body (all of it, or its top ``unfreeze`` layers with
    weights) and trains the whole network with ``lr_scale`` x the head's learning rate. The
    model is recompiled after ``trainable`` changes (Keras reads it at compile time).

The model is ``inputs -> body -> [pool] -> [dropout] -> logits``. The body's
BatchNormalization layers stay in inference mode, as the Keras transfer-learning guide
advises: they keep the moving statistics learned on the big dataset (a small new dataset's
batch statistics would wreck them once unfrozen). The guide's ``base(inputs, training=False)``
does not do it in Keras 3, where ``fit``'s ``training=True`` overrides the value given when
the graph was built (keras-team/keras#20285); a BatchNormalization layer with
``trainable=False`` does run in inference mode, so the body's BN layers are never made
trainable (their scale and offset stay fixed too).

Bases: a ``keras.Model``; a ``.keras`` file (or a ``recipes.train.run`` workdir, whose saved
preprocessor is then reused); or a ``keras.applications`` name with ``weights=PATH`` to a
local weights file (nothing is ever downloaded).

Usage::

    result = finetune.run("runs/fashion_a", new_splits, mode="finetune", head_epochs=2,
                          epochs=3, learning_rate=1e-3, lr_scale=0.1)
    result["phases"]["finetune"]["test_accuracy"], result["model"].save("new.keras")
"""

from __future__ import annotations

import dataclasses
import numbers
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import keras
import ml_collections
import numpy as np
import tensorflow as tf

from models.inspect import walk
from recipes import configs, data, io, pipeline, prepare, preprocessing

MODES = ("feature_extractor", "finetune")
BODY = "body"  # name of the nested model holding the reused layers
HEAD = "logits"  # name of the new classifier layer

__all__ = ["MODES", "build", "class_subset", "epochs_to_reach", "load_base", "run",
           "unfreeze_body"]


# --- the base -----------------------------------------------------------------------------


def _application(name: str) -> Any:
    """The ``keras.applications`` constructor called ``name``, or None."""
    fn = getattr(keras.applications, name, None) if name[:1].isupper() else None
    return fn if callable(fn) else None


def _model_path(base: str | os.PathLike) -> str:
    """``base`` as a ``.keras`` file: the file itself, or ``model.keras`` in a workdir."""
    path = os.fspath(base)
    if os.path.isdir(path):
        path = os.path.join(path, "model.keras")
    if not os.path.isfile(path):
        raise ValueError(
            f"base={os.fspath(base)!r}: no such model file; give the model.keras that "
            "recipes.train.run wrote (or its workdir), a keras.Model, or a keras.applications "
            "name such as 'MobileNetV2' with weights=PATH"
        )
    return path


def load_base(
    base: keras.Model | str | os.PathLike,
    *,
    weights: str | os.PathLike | None = None,
    application_kw: Mapping[str, Any] | None = None,
) -> keras.Model:
    """Returns the pretrained network to transfer from.

    Lecture "Transfer learning": start from a network trained on a big dataset.

    Args:
        base: a ``keras.Model`` (returned as is); a path to a ``.keras`` file or to a
            ``recipes.train.run`` workdir (loaded in safe mode); or the name of a
            ``keras.applications`` constructor, e.g. ``"MobileNetV2"``.
        weights: for an application only: the path of a local weights file (the ``no_top``
            file by default, see ``application_kw``). Never downloaded.
        application_kw: extra arguments of the application constructor; defaults are
            ``include_top=False, pooling="avg"`` (``input_shape`` is usually needed too).

    Returns:
        The base model (not copied).

    Raises:
        ValueError: a missing file, an unknown name, ``weights`` missing or misplaced.
    """
    if isinstance(base, keras.Model):
        if weights is not None:
            raise ValueError("weights= is only for keras.applications names; a keras.Model "
                             "already holds its weights: leave weights=None")
        return base
    if not isinstance(base, (str, os.PathLike)):
        raise ValueError(f"base must be a keras.Model, a .keras path or a keras.applications "
                         f"name, got {type(base).__name__}")
    app = _application(os.fspath(base))
    if app is None:
        if weights is not None:
            raise ValueError(f"weights= is only for keras.applications names; the file "
                             f"{os.fspath(base)!r} already holds its weights: drop weights=")
        path = _model_path(base)
        try:
            return keras.saving.load_model(path)
        except Exception as e:  # corrupt file, unregistered layer, ... all mean a bad base
            raise ValueError(f"base={path!r}: cannot load it ({type(e).__name__}: {e}); give "
                             "a .keras file saved by Keras 3 (recipes.train.run writes one)"
                             ) from e
    if weights is None or os.fspath(weights) == "imagenet":
        raise ValueError(
            f"weights: keras.applications.{base} needs weights=PATH to a local weights file "
            f"(babysit never downloads); fetch the file (e.g. the *_no_top.h5 for "
            f"include_top=False) on a machine with internet access and pass its path"
        )
    if not os.path.isfile(weights):
        raise ValueError(f"weights={os.fspath(weights)!r}: no such file; pass the path of a "
                         f"downloaded keras.applications.{base} weights file")
    kw = {"include_top": False, "pooling": "avg", **dict(application_kw or {})}
    try:
        return app(weights=os.fspath(weights), **kw)
    except Exception as e:  # shape mismatches, wrong file for the architecture, ...
        raise ValueError(f"keras.applications.{base}(weights={os.fspath(weights)!r}, "
                         f"**{kw}) failed ({type(e).__name__}: {e}); check that the weights "
                         "file matches include_top and the constructor's arguments") from e


def _cut_layer(model: keras.Model, cut: str | None) -> keras.layers.Layer | None:
    """The first layer to remove: ``cut``, else ``logits``, else the last Dense, else None."""
    if cut is not None:
        names = [layer.name for layer in model.layers]
        if cut not in names:
            raise ValueError(f"cut={cut!r}: {model.name} has no layer of that name; use one "
                             f"of {names[1:]} (the named layer and all after it are removed)")
        return model.get_layer(cut)
    for layer in model.layers:
        if layer.name == HEAD:
            return layer
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    return dense[-1] if dense else None


def _body(base: keras.Model, cut: str | None) -> tuple[keras.Model, str | None]:
    """The base up to (excluding) the cut layer, as a model of its own named ``body``."""
    if len(base.inputs) != 1:
        raise ValueError(f"base {base.name} has {len(base.inputs)} inputs; transfer needs a "
                         "single-input image model")
    layer = _cut_layer(base, cut)
    if layer is None:  # no classifier to chop (e.g. an application with include_top=False)
        return keras.Model(base.inputs, base.outputs[0], name=BODY), None
    if isinstance(layer, keras.layers.InputLayer):
        raise ValueError(f"cut={layer.name!r} is the input layer: nothing of the base would "
                         f"be left; cut a later layer, e.g. {base.layers[-1].name!r}")
    try:
        features = layer.input
    except (AttributeError, ValueError) as e:  # a shared layer: several inbound nodes
        raise ValueError(f"cut={layer.name!r}: the layer is used more than once; cut a "
                         "layer with a single input") from e
    if isinstance(features, (list, tuple, dict)):
        raise ValueError(f"cut={layer.name!r} takes several inputs; cut a layer with a "
                         "single input (e.g. the one after the merge)")
    if features is base.inputs[0]:
        raise ValueError(f"cut={layer.name!r} takes the model's input: nothing of the base "
                         f"would be left; cut a later layer, e.g. {base.layers[-1].name!r}")
    return keras.Model(base.inputs, features, name=BODY), layer.name


def _copy(model: keras.Model) -> keras.Model:
    """An independent copy, so training the new model leaves the caller's base untouched."""
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def _check_int(name: str, value: Any, low: int, fix: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}; {fix}")
    return int(value)


def build(
    base: keras.Model | str | os.PathLike,
    num_classes: int,
    *,
    cut: str | None = None,
    freeze: bool = True,
    dropout: float = 0.0,
    weights: str | os.PathLike | None = None,
    application_kw: Mapping[str, Any] | None = None,
) -> keras.Model:
    """Chops the classifier off ``base`` and puts a new linear head on its features.

    Lecture "Transfer learning" (Yosinski et al. 2014): keep the layers that compute general
    features, replace the task-specific classifier.

    Layout: ``inputs -> body -> [GlobalAveragePooling2D for a feature map, Flatten for
    other ranks] -> [Dropout(dropout)] -> Dense(num_classes, name="logits")``. The body's
    BatchNormalization layers are non-trainable, hence in inference mode, whatever ``freeze``.

    Args:
        base: see :func:`load_base`; a ``keras.Model`` is copied, never modified.
        num_classes: classes of the new task (>= 2).
        cut: name of the first layer to remove (it and everything after it go; the features
            are its input). Default: the layer named ``logits``, else the last Dense; with
            neither, the whole base is the body.
        freeze: make the body non-trainable (``feature_extractor`` and finetune's phase 1);
            False = as :func:`unfreeze_body` leaves it.
        dropout: dropout rate in [0, 1) before the new head.
        weights: local weights file for a ``keras.applications`` base.
        application_kw: constructor arguments for a ``keras.applications`` base.

    Returns:
        An uncompiled ``keras.Model`` outputting logits; the reused layers are in the nested
        model ``model.get_layer("body")``.

    Raises:
        ValueError: ``num_classes`` < 2, an unknown ``cut``, a bad ``dropout``, or a base
            that cannot be loaded.
    """
    return _build(base, num_classes, cut=cut, freeze=freeze, dropout=dropout, weights=weights,
                  application_kw=application_kw)[0]


def _build(base: Any, num_classes: int, *, cut: str | None, freeze: bool, dropout: float,
           weights: Any, application_kw: Mapping[str, Any] | None
           ) -> tuple[keras.Model, str | None]:
    """:func:`build`, also returning the name of the layer that was cut (None: none)."""
    num_classes = _check_int("num_classes", num_classes, 2, "a classifier needs >= 2 classes")
    if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real) \
            or not 0 <= dropout < 1:
        raise ValueError(f"dropout must be a rate in [0, 1), got {dropout!r}; try 0.2 or 0")
    given = isinstance(base, keras.Model)
    model = load_base(base, weights=weights, application_kw=application_kw)
    body, cut_name = _body(_copy(model) if given else model, cut)
    body.trainable = not freeze
    _freeze_batch_norms(body)
    inputs = keras.Input(tuple(body.inputs[0].shape[1:]), name="inputs")
    x = body(inputs)
    if len(x.shape) == 4:
        x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    elif len(x.shape) != 2:
        x = keras.layers.Flatten(name="head_flatten")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    outputs = keras.layers.Dense(num_classes, name=HEAD)(x)
    return keras.Model(inputs, outputs, name=f"{model.name}_transfer"), cut_name


def _freeze_batch_norms(body: keras.Model) -> None:
    """Keras 3 runs a non-trainable BatchNormalization in inference mode, even in ``fit``."""
    for layer in walk(body, include_self=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False


def _weighted_layers(body: keras.Model) -> list[keras.layers.Layer]:
    """The body's layers that unfreezing can make trainable (with weights, not BN)."""
    return [layer for layer in body.layers if layer.weights
            and not isinstance(layer, keras.layers.BatchNormalization)]


def _check_unfreeze(layers: int | None, available: int) -> None:
    if layers is None:
        return
    _check_int("unfreeze", layers, 1, "or None to unfreeze the whole body")
    if layers > available:
        raise ValueError(f"unfreeze={layers}, but the body has only {available} layers "
                         "with weights; use a smaller number or None (all)")


def unfreeze_body(model: keras.Model, layers: int | None = None) -> list[str]:
    """Makes the body trainable: all of it, or only its top ``layers`` layers with weights.

    Lecture "Transfer learning": with more data, fine-tune more layers (from the top: the
    last layers are the most task-specific, Yosinski et al. 2014). BatchNormalization layers
    stay frozen, so in inference mode (see the module docstring). Recompile afterwards.

    Args:
        model: a model from :func:`build`.
        layers: how many of the body's layers with weights (BN aside) to unfreeze, counted
            from the top; None = all.

    Returns:
        The names of the body's layers that are now trainable (those with weights).

    Raises:
        ValueError: ``layers`` < 1 or more than the body has.
    """
    body = model.get_layer(BODY)
    weighted = _weighted_layers(body)
    _check_unfreeze(layers, len(weighted))
    body.trainable = True  # propagates to every sublayer
    if layers is not None:
        for layer in weighted[:-layers]:
            layer.trainable = False
    _freeze_batch_norms(body)
    return [layer.name for layer in weighted if layer.trainable]


# --- data helpers -------------------------------------------------------------------------


def class_subset(
    splits: data.Splits, classes: Sequence[int], *, limit: int = 0, seed: int = 0
) -> data.Splits:
    """Keeps only ``classes`` (relabelled 0..k-1 in the given order), e.g. to make a new task.

    Args:
        splits: from ``recipes.data.load``.
        classes: the original class ids to keep (at least 2, distinct).
        limit: if > 0, keep a random subset of this many training examples (val and test
            keep all their examples of these classes).
        seed: seed of that subset.

    Returns:
        New ``Splits`` whose ``info`` has the kept classes' names and count.

    Raises:
        ValueError: fewer than 2 classes, duplicates or ids out of range.
    """
    classes = [int(c) for c in classes]
    n = splits.info.num_classes
    if len(classes) < 2 or len(set(classes)) != len(classes) \
            or any(not 0 <= c < n for c in classes):
        raise ValueError(f"classes={classes}: give >= 2 distinct class ids in [0, {n})")
    _check_int("limit", limit, 0, "0 keeps every example")
    lookup = np.full(n, -1, np.int64)
    lookup[classes] = np.arange(len(classes))

    def keep(split: data.Split, limit: int = 0) -> data.Split:
        index = np.flatnonzero(lookup[split.y] >= 0)
        if 0 < limit < len(index):
            index = np.sort(np.random.default_rng(seed).choice(index, limit, replace=False))
        x = split.x.subset(index) if data.is_lazy(split.x) else split.x[index]  # never loaded
        return data.Split(x, lookup[split.y[index]])

    names = tuple(splits.info.class_names[c] for c in classes)
    info = dataclasses.replace(splits.info, name=f"{splits.info.name}{classes}",
                               num_classes=len(classes), class_names=names)
    return data.Splits(keep(splits.train, limit), keep(splits.val), keep(splits.test), info)


def epochs_to_reach(accuracies: Iterable[float], target: float) -> int | None:
    """The first epoch (1-based) whose accuracy reaches ``target``, or None if none does."""
    for epoch, acc in enumerate(accuracies, start=1):
        if acc >= target:
            return epoch
    return None


# --- the recipe ---------------------------------------------------------------------------


def _splits_and_config(
    data_or_config: Any, config: Any
) -> tuple[data.Splits, ml_collections.ConfigDict]:
    if isinstance(data_or_config, data.Splits):
        return data_or_config, configs.complete(config)
    if isinstance(data_or_config, (tuple, list)):  # the user's arrays or tf.data datasets
        cfg = configs.complete(config)
        return prepare.load_splits(cfg, data_or_config), cfg
    if config is not None:
        raise ValueError("config= is for Splits data only; with a config tree as the second "
                         "argument put every field in that tree")
    if not isinstance(data_or_config, (Mapping, ml_collections.ConfigDict)):
        raise ValueError("splits_or_config must be recipes.data.Splits or a config tree "
                         f"(dict/ConfigDict) whose dataset branch picks the data, got "
                         f"{type(data_or_config).__name__}")
    cfg = configs.complete(data_or_config)
    return prepare.load_splits(cfg), cfg


def _preprocessor(choice: Any, base: Any, splits: data.Splits,
                  cfg: ml_collections.ConfigDict) -> preprocessing.Preprocessor:
    """``auto``: the base workdir's saved preprocessor if any, else fit ``dataset.preprocess``."""
    if isinstance(choice, preprocessing.Preprocessor):
        return choice
    method = cfg.dataset.preprocess
    if choice == "auto":
        if isinstance(base, (str, os.PathLike)) and _application(os.fspath(base)) is None:
            directory = os.path.dirname(_model_path(base))
            if os.path.isfile(os.path.join(directory, preprocessing.JSON_NAME)):
                return preprocessing.Preprocessor.load(directory)
    elif choice in preprocessing.METHODS:
        method = choice
    else:
        raise ValueError(f"preprocessor={choice!r}: use 'auto' (the base workdir's), a fitted "
                         f"recipes.preprocessing.Preprocessor, or one of {preprocessing.METHODS}")
    return prepare.fit_preprocessor(cfg, splits.train.x, method)


def _compile(model: keras.Model, cfg: ml_collections.ConfigDict, lr: float,
             num_classes: int) -> None:
    prepare.compile_model(model, cfg, num_classes=num_classes, learning_rate=lr)


def _features(model: keras.Model, ds: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """(features, one-hot labels) of a fixed-order dataset, through the frozen body."""
    extractor = keras.Model(model.inputs, model.get_layer(HEAD).input)
    feats, labels = [], []
    for x, y in ds:
        feats.append(keras.ops.convert_to_numpy(extractor(x, training=False)))
        labels.append(y.numpy())
    return np.concatenate(feats), np.concatenate(labels)


def _head_model(model: keras.Model, dim: int) -> keras.Model:
    """The head alone on precomputed features; it shares its layers with ``model``."""
    inputs = keras.Input((dim,), name="features")
    x = inputs
    if any(layer.name == "head_dropout" for layer in model.layers):
        x = model.get_layer("head_dropout")(x)
    return keras.Model(inputs, model.get_layer(HEAD)(x), name="head")


def _phase(model: keras.Model, train_ds: tf.data.Dataset, evals: Mapping[str, Any], *,
           epochs: int, lr: float, callbacks: list, verbose: int) -> dict[str, Any]:
    """One ``fit`` and the evaluation of every split afterwards."""
    start = time.time()
    history = model.fit(train_ds, validation_data=evals.get("val"), epochs=epochs,
                        callbacks=callbacks, verbose=verbose)
    seconds = time.time() - start
    out: dict[str, Any] = {
        "epochs": len(history.history.get("loss", [])),
        "learning_rate": float(lr),
        "trainable_parameters": int(sum(np.prod(w.shape) for w in model.trainable_weights)),
        "seconds": round(seconds, 2),
        "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
    }
    for name, ds in evals.items():
        loss, acc = model.evaluate(ds, verbose=0)
        out[f"{name}_loss"], out[f"{name}_accuracy"] = float(loss), float(acc)
    return out


def _features_ds(x: np.ndarray, y: np.ndarray, batch: int, *, seed: int | None = None
                 ) -> tf.data.Dataset:
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if seed is not None:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch).prefetch(tf.data.AUTOTUNE)


def run(
    base: keras.Model | str | os.PathLike,
    splits_or_config: data.Splits | Mapping | ml_collections.ConfigDict,
    *,
    mode: str = "finetune",
    head_epochs: int = 5,
    epochs: int = 5,
    learning_rate: float | None = None,
    lr_scale: float = 0.1,
    batch_size: int | None = None,
    cut: str | None = None,
    unfreeze: int | None = None,
    dropout: float = 0.0,
    head_patience: int = 0,
    precompute: bool | None = None,
    preprocessor: Any = "auto",
    weights: str | os.PathLike | None = None,
    application_kw: Mapping[str, Any] | None = None,
    config: Any = None,
    workdir: str | None = None,
    overwrite: bool = False,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: int = 0,
) -> dict[str, Any]:
    """Transfers ``base`` to new data: a new head on frozen features, then optionally more.

    Lecture "Transfer learning" (Yosinski et al. 2014): small data, similar task → train a
    linear classifier on the frozen features (``feature_extractor``); more data → also
    fine-tune the body with a lower learning rate (``finetune``).

    Args:
        base: a ``keras.Model``, a ``.keras`` file or ``recipes.train.run`` workdir, or a
            ``keras.applications`` name (with ``weights``); see :func:`load_base`.
        splits_or_config: the new data as ``recipes.data.Splits`` or in any form
            ``recipes.data.from_user`` takes (``(x, y, x_test, y_test)``, a pair of
            ``tf.data`` datasets; then ``config=`` may give the tree), or a config tree
            (dict/ConfigDict) whose ``dataset`` branch picks it (``optimizer``, ``loss``,
            ``augment`` and ``train`` are read from the same tree).
        mode: ``feature_extractor`` (train the head only) or ``finetune`` (head, then body).
        head_epochs: epochs of phase 1, the new head on the frozen body (>= 1).
        epochs: epochs of phase 2, fine-tuning (``finetune`` only, >= 1).
        learning_rate: the head's learning rate; None = ``optimizer.learning_rate``.
        lr_scale: phase 2 uses ``lr_scale * learning_rate`` (in (0, 1]; 0.1 by default).
        batch_size: None = ``train.batch_size``.
        cut: first layer of the base to remove (see :func:`build`).
        unfreeze: phase 2 trains only the body's top ``unfreeze`` layers with weights;
            None = the whole body.
        dropout: dropout rate before the new head.
        head_patience: if > 0 and there is a validation split, phase 1 stops once
            ``val_loss`` has not improved for this many epochs (best weights restored).
        precompute: run phase 1 on features computed once (the CS231n "CNN codes"): the
            same training as through the frozen body, except that the body's Dropout, if it
            has any, is off; None = yes unless augmentation is on (precomputed features are
            of un-augmented images).
        preprocessor: ``"auto"`` (the base workdir's saved preprocessor, else
            ``dataset.preprocess`` fitted on the new training images), a method name, or a
            fitted ``recipes.preprocessing.Preprocessor``.
        weights: local weights file for a ``keras.applications`` base.
        application_kw: constructor arguments for a ``keras.applications`` base.
        config: with ``Splits`` data: a (partial) config tree for the other branches.
        workdir: if given, write ``model.keras``, ``summary.json``, ``history.csv`` and the
            preprocessor there.
        overwrite: replace a finished run in ``workdir``.
        callbacks: extra Keras callbacks for every ``fit`` (each phase is one ``fit``).
        verbose: Keras verbosity of ``fit``.

    Returns:
        A dict: ``mode``, ``cut``, ``num_classes``, ``phases`` (``head`` and, in finetune
        mode, ``finetune``; each with ``epochs``, ``learning_rate``,
        ``trainable_parameters``, ``seconds``, ``history`` and ``{train,val,test}_accuracy``
        / ``_loss``), the final ``train/val/test_accuracy``, ``epochs`` (both phases),
        ``seconds`` and ``model`` (the trained ``keras.Model``, not in ``summary.json``).

    Raises:
        ValueError: a bad argument (named, with the fix), a base that cannot be loaded, or
            data whose image shape the base does not take.
    """
    start = time.time()
    head_epochs, epochs, head_patience = _check_schedule(mode, head_epochs, epochs, lr_scale,
                                                         head_patience)
    splits, cfg = _transfer_config(splits_or_config, config, batch_size, learning_rate)
    if pipeline.progressive(cfg):
        raise ValueError(f"train.progressive_epochs={cfg.train.progressive_epochs}: "
                         "fine-tuning trains at the pretrained network's input size; set "
                         "train.progressive_epochs=0")
    lr = cfg.optimizer.learning_rate
    if workdir and not overwrite and os.path.exists(os.path.join(workdir, "summary.json")):
        raise ValueError(f"workdir={workdir!r} already holds a finished run (summary.json); "
                         "use a new workdir or overwrite=True")
    keras.utils.set_random_seed(cfg.train.seed)
    num_classes = splits.info.num_classes
    model, cut_name = _build(base, num_classes, cut=cut, freeze=True, dropout=dropout,
                             weights=weights, application_kw=application_kw)
    if mode == "finetune":  # before phase 1, not after it
        _check_unfreeze(unfreeze, len(_weighted_layers(model.get_layer(BODY))))
    pre = _preprocessor(preprocessor, base, splits, cfg)
    _check_input_shape(model, pipeline.output_shape(cfg, splits.info.input_shape, pre),
                       splits, pre)
    augmenting = bool(pipeline.augmentation_layers(cfg, splits.info.input_shape)
                      or pipeline.mixing_layers(cfg))
    precompute = (not augmenting) if precompute is None else bool(precompute)

    def make(split: data.Split, training: bool) -> tf.data.Dataset:
        return pipeline.make(split.x, split.y, cfg, training=training,
                             num_classes=num_classes, preprocessor=pre, seed=cfg.train.seed)

    evals = {name: make(split, False) for name, split in
             (("train", splits.train), ("val", splits.val), ("test", splits.test)) if len(split)}
    train_ds = make(splits.train, True)
    head_cbs = list(callbacks)
    if head_patience and "val" in evals:
        head_cbs.append(keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=head_patience, restore_best_weights=True))
    phases = {"head": _head_phase(model, cfg, train_ds, evals, precompute=precompute,
                                  epochs=head_epochs, callbacks=head_cbs, verbose=verbose)}
    # Phase 2: unfreeze, recompile (trainable is read at compile time), lower lr.
    if mode == "finetune":
        names = unfreeze_body(model, unfreeze)
        _compile(model, cfg, lr * lr_scale, num_classes)
        phases["finetune"] = _phase(model, train_ds, evals, epochs=epochs, lr=lr * lr_scale,
                                    callbacks=list(callbacks), verbose=verbose)
        phases["finetune"]["unfrozen_layers"] = names
    else:
        _compile(model, cfg, lr, num_classes)  # so the returned model evaluates as is
    result = _result(mode, base, cut_name, splits, phases, model)
    result["seconds"] = round(time.time() - start, 2)
    if workdir:
        _write(workdir, result, model, pre)
    result["model"] = model
    return result


def _check_schedule(mode: str, head_epochs: Any, epochs: Any, lr_scale: Any,
                    head_patience: Any) -> tuple[int, Any, int]:
    """Checks ``run``'s phase arguments; returns head_epochs, epochs and head_patience."""
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}: use one of {MODES} (train the head only, or the "
                         "head then the whole network)")
    head_epochs = _check_int("head_epochs", head_epochs, 1,
                             "the new head must be trained before anything else")
    if mode == "finetune":
        epochs = _check_int("epochs", epochs, 1, "or mode='feature_extractor' to train "
                            "only the head")
    if isinstance(lr_scale, bool) or not isinstance(lr_scale, numbers.Real) \
            or not 0 < lr_scale <= 1:
        raise ValueError(f"lr_scale must be in (0, 1], got {lr_scale!r}; fine-tuning uses a "
                         "lower learning rate than the head's, try 0.1")
    return head_epochs, epochs, _check_int("head_patience", head_patience, 0, "0 turns it off")


def _transfer_config(splits_or_config: Any, config: Any, batch_size: int | None,
                     learning_rate: float | None) -> tuple[data.Splits, ml_collections.ConfigDict]:
    """The data and the config tree, with ``batch_size`` and ``learning_rate`` applied."""
    splits, cfg = _splits_and_config(splits_or_config, config)
    with cfg.unlocked():
        if batch_size is not None:
            cfg.train.batch_size = batch_size
        if learning_rate is not None:
            cfg.optimizer.learning_rate = learning_rate
    lr = cfg.optimizer.learning_rate
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not lr > 0:
        raise ValueError(f"learning_rate must be > 0, got {lr!r}; try 1e-3 with adam")
    return splits, cfg


def _check_input_shape(model: keras.Model, shape: tuple, splits: data.Splits,
                       pre: preprocessing.Preprocessor) -> None:
    wanted = tuple(model.inputs[0].shape[1:])
    if len(wanted) != len(shape) or any(w not in (None, s) for w, s in zip(wanted, shape)):
        raise ValueError(f"the base takes inputs of shape {wanted} but the data gives "
                         f"{shape} (dataset {splits.info.name}, preprocess {pre.method}); "
                         "transfer needs data shaped like the base's training data")


def _head_phase(model: keras.Model, cfg: ml_collections.ConfigDict, train_ds: tf.data.Dataset,
                evals: Mapping[str, tf.data.Dataset], *, precompute: bool, epochs: int,
                callbacks: list, verbose: int) -> dict[str, Any]:
    """Phase 1: the new head on the frozen body, through it or on features computed once."""
    lr, num_classes = cfg.optimizer.learning_rate, int(model.output_shape[-1])
    seed, batch = cfg.train.seed, cfg.train.batch_size
    if precompute:
        feats = {name: _features(model, ds) for name, ds in evals.items()}
        head = _head_model(model, feats["train"][0].shape[1])
        _compile(head, cfg, lr, num_classes)
        phase = _phase(head, _features_ds(*feats["train"], batch, seed=seed),
                       {name: _features_ds(*f, batch) for name, f in feats.items()},
                       epochs=epochs, lr=lr, callbacks=callbacks, verbose=verbose)
    else:
        _compile(model, cfg, lr, num_classes)
        phase = _phase(model, train_ds, evals, epochs=epochs, lr=lr, callbacks=callbacks,
                       verbose=verbose)
    phase["precomputed"] = precompute
    return phase


def _result(mode: str, base: Any, cut_name: str, splits: data.Splits,
            phases: dict[str, Any], model: keras.Model) -> dict[str, Any]:
    last = phases["finetune" if mode == "finetune" else "head"]
    return {
        "mode": mode,
        "base": base.name if isinstance(base, keras.Model) else os.fspath(base),
        "cut": cut_name,
        "dataset": splits.info.name,
        "num_classes": splits.info.num_classes,
        "num_train": len(splits.train),
        "phases": phases,
        "epochs": sum(p["epochs"] for p in phases.values()),
        **{k: last[k] for k in ("train_accuracy", "val_accuracy", "test_accuracy") if k in last},
        "parameters": int(model.count_params()),
    }


def _write(workdir: str, result: Mapping[str, Any], model: keras.Model,
           pre: preprocessing.Preprocessor) -> None:
    """Writes the run's artifacts atomically (``recipes.io``), the summary last."""
    os.makedirs(workdir, exist_ok=True)
    pre.save(workdir)
    rows = []
    for phase, p in result["phases"].items():
        h = p["history"]
        for i in range(p["epochs"]):
            rows.append({"phase": phase, "epoch": i + 1, "lr": p["learning_rate"],
                         **{k: v[i] for k, v in h.items() if i < len(v)}})
    columns = ["phase", "epoch", "lr"]
    for row in rows:
        columns += [k for k in row if k not in columns]
    io.write_csv(os.path.join(workdir, "history.csv"), rows, columns)
    with io.atomic_path(os.path.join(workdir, "model.keras"), suffix=".keras") as tmp:
        model.save(tmp)
    io.write_json(os.path.join(workdir, "summary.json"), dict(result))
