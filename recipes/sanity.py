"""Sanity checks before training: does the loss, the model and the pipeline make sense?

CS231n lecture 6, "Babysitting the learning process": check the initial loss (≈ ln C for
softmax), crank up regularization (the loss should go up), overfit a tiny subset (20
examples → 100 % train accuracy, loss ≈ 0), and (Neural Networks 3) check analytic against
numeric gradients; plus Karpathy's "A recipe for training neural networks" (2019): an
input-independent baseline (zeroed inputs must do worse) and "init well" (the logits' bias
at the log class priors).

Every check is usable alone, ``check(config, *, model=None, data=None, ...) -> CheckResult``
(``model=``/``data=``: the user's network and data, as ``recipes.prepare.prepare`` takes
them), and
:func:`run_all` runs them in the lecture's order. Each result carries a one-line ``verdict``
with the measured numbers (what the procedure prints as it goes) and an ``advice`` line.
The checks change the config only where the lecture does (regularization off, no
augmentation, full batch for the overfit run, constant learning rate) and never tune it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import keras
import ml_collections
import numpy as np
import tensorflow as tf

import models
from models.heads import (  # noqa: F401 - recipes.sanity.* names, kept public
    IMBALANCE_RATIO,
    class_prior_entropy,
    init_output_bias,
    logits_layer,
    priors,
)
from models.inspect import as_float64, custom_layers, float64  # noqa: F401 - public here too
from recipes import configs, data, io, losses, pipeline, prepare, preprocessing, tasks
from recipes.configs import base

NO_REGULARIZATION = {"model.l1": 0.0, "model.l2": 0.0, "model.dropout": 0.0,
                     "loss.label_smoothing": 0.0}
INITIAL_LOSS_EXAMPLES = 512  # "a few batches": enough that the mean's noise is ~1 %
REGULARIZATION_L2 = 1.0  # "crank up regularization": L2 = 1.0 adds Σw² (≈ 100 for He init)
REGULARIZATION_RISE = 0.01  # the loss must rise by > 1 % (relative) to count as "went up"
OVERFIT_LOSS = 0.05  # "loss near 0": below 0.05 (softmax: p(correct) > 0.95 on average)
BASELINE_EPOCHS = 3  # "trained briefly": digits reaches ~90 % in 3 epochs, zeros ~10 %
BASELINE_MARGIN = 0.1  # real inputs must beat zeroed ones by 10 points of accuracy
GRAD_THRESHOLD = 1e-6  # lecture: rel. error < 1e-7 great, 1e-7..1e-5 OK with kinks
GRAD_STEP = 1e-5  # central-difference h (lecture: h = 1e-5)
GRAD_FLOOR = 1e-3  # |gradient| below this: judged on absolute error (float64 round-off)


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """One sanity check's outcome, with the numbers behind it.

    Attributes:
        name: the check (``initial_loss``, ``regularization_raises_loss``, ...).
        passed: whether the check passed.
        measured: the headline number measured (e.g. the initial loss).
        expected: what it should be (e.g. ln C), or the bound it had to beat.
        verdict: one line with the numbers, printed by the procedure as it goes.
        advice: what to do (or why it passed), in the lecture's words.
        data: every other number measured, JSON-ready.
    """

    name: str
    passed: bool
    measured: float
    expected: float
    verdict: str
    advice: str
    data: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The result as a JSON-ready dict (non-finite numbers become None)."""
        return io.json_ready(dataclasses.asdict(self))


def _status(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


# --- shared set-up ------------------------------------------------------------------------

ModelFn = Callable[[ml_collections.ConfigDict, tuple[int, ...], int], keras.Model]


def configure(config: Any, changes: Mapping[str, Any] | None = None, *,
              augment: bool = True, constant_lr: bool = False) -> ml_collections.ConfigDict:
    """The complete config with dotted-path ``changes`` applied (a new tree).

    Args:
        config: a full or partial config tree.
        changes: ``{"model.l2": 0.0, ...}``.
        augment: keep ``augment.*``; False resets every augmentation to off.
        constant_lr: replace the schedule by a constant ``optimizer.learning_rate``.

    Returns:
        A new ConfigDict.
    """
    cfg = configs.complete(config)
    for path, value in (changes or {}).items():
        branch, _, field = path.partition(".")
        if branch not in cfg or field not in cfg[branch]:
            raise ValueError(f"config: unknown field {path!r}")
        cfg[branch][field] = value
    if not augment:
        cfg.augment = base.get_config().augment
    if constant_lr:
        cfg.schedule.name = "constant"
        cfg.schedule.warmup_epochs = 0.0
    return cfg


def load(cfg: ml_collections.ConfigDict, splits: Any = None) -> data.Splits:
    """``splits`` if already loaded, else the user's data or ``cfg.dataset``'s, loaded."""
    return splits if isinstance(splits, data.Splits) else prepare.load_splits(cfg, splits)


@dataclasses.dataclass
class Setup:
    """Data, fitted preprocessing and the model's input shape for one check."""

    config: ml_collections.ConfigDict
    splits: data.Splits
    preprocessor: preprocessing.Preprocessor
    input_shape: tuple[int, ...]
    prepared: prepare.Prepared | None = None  # the model's source, task and compile

    @property
    def num_classes(self) -> int:
        return self.splits.info.num_classes

    @property
    def task(self) -> tasks.Task:
        return self.prepared.task

    @property
    def users_model(self) -> bool:
        """Whether the network is the user's (``model.*`` regularization does not apply)."""
        return self.prepared.source.is_users(self.config)

    def dataset(self, x: np.ndarray, y: np.ndarray, *, training: bool,
                zero_inputs: bool = False) -> tf.data.Dataset:
        """The config's pipeline over (x, y); ``zero_inputs`` zeroes what the model sees."""
        ds = self.prepared.dataset(x, y, training=training, seed=self.config.train.seed)
        if zero_inputs:
            ds = ds.map(lambda images, labels: (tf.zeros_like(images), labels))
        return ds

    def model(self, *, learning_rate: float | None = None, model_fn: ModelFn | None = None,
              model: keras.Model | None = None) -> keras.Model:
        """A freshly initialized (seeded) model, compiled as ``train.prepare`` does.

        The learning rate is constant (``optimizer.learning_rate`` unless given): the checks
        and the range runs are too short for a schedule to mean anything.
        """
        cfg = self.config
        lr = float(cfg.optimizer.learning_rate if learning_rate is None else learning_rate)
        if model is None and model_fn is None:
            return self.prepared.fresh_model(cfg, learning_rate=lr)  # as prepare builds it
        keras.utils.set_random_seed(cfg.train.seed)  # same init for every run of a check
        if model is None:
            model = model_fn(cfg, self.input_shape, self.num_classes)
            if cfg.train.get("prior_bias", False) and cfg.loss.name == "softmax":
                init_output_bias(model, self.splits.train.y, self.num_classes)  # as prepare
        return prepare.compile_model(model, cfg, num_classes=self.num_classes,
                                     task=self.task, learning_rate=lr)


def setup(config: Any, splits: Any = None,
          changes: Mapping[str, Any] | None = None, *, augment: bool = True,
          constant_lr: bool = True, model: Any = None) -> Setup:
    """Completes the config, loads the data and fits preprocessing on the training split.

    The same steps as ``recipes.train.prepare`` (whose checks the config goes through), so a
    check sees exactly what training will see. ``model``: the user's network (see
    ``recipes.prepare.prepare``), whose compile is kept before ``changes`` apply.
    """
    loaded = load(configs.complete(config), splits)
    cfg = prepare.resolve(config, model=model, splits=loaded)
    cfg = configure(cfg, changes, augment=augment, constant_lr=constant_lr)
    p = prepare.prepare(cfg, model=model, splits=loaded)
    shape = pipeline.output_shape(p.config, p.splits.info.input_shape, p.preprocessor)
    return Setup(p.config, p.splits, p.preprocessor, tuple(shape), p)


def sample(n: int, k: int, seed: int = 0) -> np.ndarray:
    """``min(k, n)`` distinct indices of ``range(n)``, seeded and sorted (a few batches)."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=min(int(k), n), replace=False))


def stratified_subset(y: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Indices of ``n`` examples taken round-robin over the classes (seeded, sorted).

    20 examples of 10 classes gives 2 of each: the lecture's tiny subset should contain every
    class, or "100 % accuracy" means less.
    """
    y = np.asarray(y)
    if y.ndim == 2:  # multi-label tags: no classes to go round, a seeded sample
        return sample(len(y), n, seed)
    n = min(int(n), len(y))
    rng = np.random.default_rng(seed)
    pools = [list(rng.permutation(np.flatnonzero(y == c))) for c in np.unique(y)]
    picked: list[int] = []
    while len(picked) < n:
        for pool in pools:
            if pool and len(picked) < n:
                picked.append(int(pool.pop()))
    return np.sort(np.array(picked, dtype=np.int64))


def _evaluate(model: keras.Model, ds: tf.data.Dataset) -> tuple[float, float]:
    scores = model.evaluate(ds, verbose=0, return_dict=True)
    return float(scores["loss"]), float(scores["accuracy"])


def _optimizer_text(cfg: ml_collections.ConfigDict, lr: float | None = None) -> str:
    lr = cfg.optimizer.learning_rate if lr is None else lr
    return f"{cfg.optimizer.name} lr {lr:.3g}"


# --- initial loss ---------------------------------------------------------------------------


def expected_initial_loss(loss_cfg: Any, y: np.ndarray, num_classes: int,
                          bias: np.ndarray | None = None) -> float:
    """The loss a network with tiny weights has: its scores are the logits' bias alone.

    Softmax: the cross-entropy −Σ_c p_c ln softmax(b)_c between the label frequencies p and
    the bias b; ln C (2.303 for 10 classes) for a constant bias. SVM: the mean hinge
    Σ_{j≠y} max(0, b_j − b_y + Δ); (C − 1)·Δ for a constant bias (lecture: "C − 1").
    """
    c = configs.config_fields(loss_cfg, "loss")
    b = np.zeros(num_classes) if bias is None else np.asarray(bias, dtype=np.float64)
    p = priors(y, num_classes)
    if c["name"] in ("svm", "hinge"):
        margins = np.maximum(0.0, b[None, :] - b[:, None] + c["svm_margin"])  # [true, j]
        np.fill_diagonal(margins, 0.0)
        return float(np.sum(p * margins.sum(axis=1)))
    log_softmax = b - (b.max() + np.log(np.sum(np.exp(b - b.max()))))
    return float(-np.sum(p * log_softmax))


def initial_loss(config: Any, *, splits: data.Splits | None = None,
                 tolerance: float | None = None, examples: int = INITIAL_LOSS_EXAMPLES,
                 model_fn: ModelFn | None = None, model: Any = None,
                 data: Any = None) -> CheckResult:
    """Loss at initialization ≈ −ln(1/C) for softmax, (C − 1)·Δ for the SVM.

    Lecture 6, "Double check that the loss is reasonable": regularization off, the loss of
    the untrained network on the training data should be the loss of uniform scores.

    Args:
        config: a full or partial config tree.
        splits: already-loaded data (else ``config.dataset`` is loaded).
        model: the user's network (a ``keras.Model`` or a function returning one), as
            ``recipes.prepare.prepare`` takes it; default ``config.model``.
        data: the user's data (``recipes.data.from_user``'s forms); default ``splits``.
        tolerance: relative tolerance |loss − expected| / expected; default
            ``babysit.initial_loss_tolerance``.
        examples: training examples the loss is averaged over (a few batches).
        model_fn: ``(config, input_shape, num_classes) -> keras.Model`` instead of
            ``models.build`` (uncompiled; compiled here with the config's loss).

    Returns:
        A CheckResult; ``measured`` is the loss, ``expected`` ln C (or the prior-bias value
        when the logits' bias is set, see :func:`init_output_bias`; or (C − 1)·Δ for svm).
    """
    s = setup(config, _data(data, splits), NO_REGULARIZATION, augment=False, model=model)
    cfg, n_cls = s.config, s.num_classes
    tol = float(cfg.babysit.initial_loss_tolerance if tolerance is None else tolerance)
    idx = sample(len(s.splits.train), examples, cfg.train.seed)
    x, y = s.splits.train.x[idx], s.splits.train.y[idx]
    model = s.model(model_fn=model_fn)
    loss, _ = _evaluate(model, s.dataset(x, y, training=False))
    layer = logits_layer(model)
    bias = None if layer is None else keras.ops.convert_to_numpy(layer.bias)
    svm = cfg.loss.name in ("svm", "hinge")
    if _closed_form(s):
        expected = expected_initial_loss(cfg.loss, y, n_cls, bias)
        uniform = expected_initial_loss(cfg.loss, y, n_cls)
    else:
        expected = _loss_at_bias(model, s, x, y, bias)
        uniform = _loss_at_bias(model, s, x, y, None)
    rel = (loss - expected) / expected if expected > 0 else math.inf
    passed = bool(math.isfinite(loss) and abs(rel) <= tol)

    batch = next(iter(s.dataset(x[:256], y[:256], training=False)))[0].numpy()
    logits = keras.ops.convert_to_numpy(model(batch[:256], training=False))
    stats = {"loss": loss, "expected": expected, "uniform_expected": uniform,
             "relative_error": rel, "tolerance": tol, "num_classes": n_cls,
             "examples": len(y), "loss_name": cfg.loss.name,
             "input_mean": float(batch.mean()), "input_std": float(batch.std()),
             "logit_std": float(logits.std()), "labels_seen": int(len(np.unique(y))),
             "init": cfg.model.init, "init_scale": float(cfg.model.init_scale)}
    what = _expected_text(s, expected, uniform, svm)
    verdict = (f"initial loss {loss:.3f} vs {what} ({rel:+.1%}, tolerance {tol:.0%}, "
               f"{len(y)} examples, regularization off): {_status(passed)}")
    if passed:
        advice = ("the untrained network scores the classes uniformly, as it should"
                  + (" (valid for small weights only with the SVM loss)" if svm else ""))
    else:
        advice = _initial_loss_advice(loss, expected, stats, svm)
    return CheckResult("initial_loss", passed, loss, expected, verdict, advice, stats)


def _closed_form(s: Setup) -> bool:
    """Whether the config's own loss on C logits applies (the closed forms above)."""
    return s.task.kind == tasks.MULTICLASS and s.config.loss.name != "model" \
        and s.task.from_logits


def _loss_at_bias(model: keras.Model, s: Setup, x: Any, y: Any, bias: Any) -> float:
    """The model's own loss for outputs at the last layer's bias alone (tiny weights).

    Softmax or sigmoid outputs see the activation of the bias; ln C for C classes and ln 2
    per sigmoid unit at a zero bias, whatever loss the model was compiled with.
    """
    units = s.task.outputs
    b = np.zeros(units) if bias is None or np.shape(bias) != (units,) else np.asarray(bias)
    targets = np.concatenate([t.numpy() for _, t in s.dataset(x, y, training=False)])
    z = np.broadcast_to(b, (len(targets), units)).astype(np.float32)
    if not s.task.from_logits:
        z = tasks.probabilities(dataclasses.replace(s.task, activation="linear"), z)
        z = z.astype(np.float32)
    loss_fn = model.loss if callable(model.loss) else keras.losses.get(model.loss)
    return float(np.mean(keras.ops.convert_to_numpy(loss_fn(targets, z))))


def _expected_text(s: Setup, expected: float, uniform: float, svm: bool) -> str:
    """How the expected initial loss reads: ln C, ln 2 per unit, (C−1)·Δ or the prior value."""
    if abs(expected - uniform) > 1e-6:
        return f"prior-bias value {expected:.3f}"
    if svm:
        return f"(C−1)·Δ = {expected:.3f}"
    if s.task.kind != tasks.MULTICLASS and abs(expected - math.log(2)) < 1e-3:
        return f"ln 2 = {expected:.3f}" + (" per label" if s.task.kind == tasks.MULTILABEL
                                            else "")
    if abs(expected - math.log(s.num_classes)) < 1e-3:
        return f"ln({s.num_classes}) = {expected:.3f}"
    return f"the loss of uniform outputs, {expected:.3f}"


def _data(data_: Any, splits: Any) -> Any:
    """``data=`` or (its older name) ``splits=``."""
    return data_ if data_ is not None else splits


def _initial_loss_advice(loss: float, expected: float, stats: Mapping[str, Any],
                         svm: bool) -> str:
    causes = []
    if not math.isfinite(loss):
        return ("the loss is NaN/inf before any update: the init or the inputs overflow; "
                "check preprocessing and use a fan-in init (he/xavier)")
    if abs(stats["input_mean"]) > 1.0 or stats["input_std"] > 3.0:
        causes.append(f"inputs are not normalized (mean {stats['input_mean']:.2f}, "
                      f"std {stats['input_std']:.2f}): preprocessing is missing — set "
                      "dataset.preprocess=standardize")
    if loss > expected:
        scale = stats["init"] in ("small", "large")
        causes.append(
            f"the logits are large at init (std {stats['logit_std']:.2f}, ≈ 0 expected): " + (
                f"model.init={stats['init']} with init_scale={stats['init_scale']:g} is too "
                "large — use he/xavier or a small scale" if scale else
                f"model.init={stats['init']} gives the logits layer unit-scale outputs — "
                "initialize the last layer small (Karpathy 2019, 'init well') or use "
                "model.init=small"))
        if svm:
            causes.append("with the SVM loss (C−1)·Δ holds only for tiny weights "
                          "(model.init=small)")
    else:
        causes.append("the loss is BELOW chance before training: labels leak into the "
                      "inputs, or the loss is not averaged the way you think")
    if stats["labels_seen"] < stats["num_classes"]:
        causes.append(f"only {stats['labels_seen']} of {stats['num_classes']} classes occur in "
                      "the checked examples: labels may be wrong or sorted")
    return "; ".join(causes)


def regularization_raises_loss(config: Any, *, splits: data.Splits | None = None,
                               l2: float = REGULARIZATION_L2,
                               examples: int = INITIAL_LOSS_EXAMPLES, model: Any = None,
                               data: Any = None) -> CheckResult:
    """The same initialized network with a large L2 strength must have a higher loss.

    Lecture 6, "Double check that the loss is reasonable": "crank up regularization — loss
    went up, good" (2.30 → 3.07 in the lecture). Proves the penalty reaches the loss.

    Args:
        config: a full or partial config tree.
        splits: already-loaded data.
        model: the user's network (a ``keras.Model`` or a function returning one), as
            ``recipes.prepare.prepare`` takes it; default ``config.model``.
        data: the user's data (``recipes.data.from_user``'s forms); default ``splits``.
        l2: the large L2 strength (Keras's l2·Σw² on every kernel).
        examples: training examples the loss is averaged over.

    Returns:
        A CheckResult; ``measured`` is the loss with ``l2``, ``expected`` the loss without.
        On a user's network (``model.l2`` does not reach its layers) the check is skipped:
        ``passed`` is None.
    """
    s = setup(config, _data(data, splits), NO_REGULARIZATION, augment=False, model=model)
    if s.users_model:
        return CheckResult("regularization_raises_loss", None, math.nan, math.nan,
                           "skipped: model.l2 configures the built-in networks; your model's "
                           "regularization lives in its own layers", "", {"skipped": True})
    idx = sample(len(s.splits.train), examples, s.config.train.seed)
    ds = s.dataset(s.splits.train.x[idx], s.splits.train.y[idx], training=False)
    plain = s.model()
    base_loss, _ = _evaluate(plain, ds)
    s.config.model.l2 = float(l2)
    reg = s.model()
    reg.set_weights(plain.get_weights())  # the very same weights: only the penalty differs
    reg_loss, _ = _evaluate(reg, ds)
    rise = (reg_loss - base_loss) / base_loss
    passed = bool(math.isfinite(reg_loss) and rise > REGULARIZATION_RISE)
    verdict = (f"loss with model.l2={l2:g}: {reg_loss:.3f} vs {base_loss:.3f} without "
               f"({rise:+.1%}): {_status(passed)}")
    advice = ("the regularization penalty reaches the loss" if passed else
              "the L2 penalty does not reach the loss: the kernels carry no regularizer or "
              "the training loss ignores model.losses — fix before tuning model.l2")
    return CheckResult("regularization_raises_loss", passed, reg_loss, base_loss, verdict,
                       advice, {"l2": float(l2), "loss": base_loss, "loss_with_l2": reg_loss,
                                "relative_rise": rise})


# --- overfit a tiny subset ------------------------------------------------------------------


class _StopWhenMemorized(keras.callbacks.Callback):
    """Stops once an epoch (one full batch) has 100 % accuracy and loss below ``threshold``."""

    def __init__(self, threshold: float):
        super().__init__()
        self.threshold, self.epochs, self.losses = threshold, 0, []

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self.epochs = epoch + 1
        loss = float(logs.get("loss", math.nan))
        self.losses.append(loss)
        if not math.isfinite(loss):
            self.model.stop_training = True
        elif float(logs.get("accuracy", 0.0)) >= 1.0 and loss < self.threshold:
            self.model.stop_training = True


def overfit_small(config: Any, *, splits: data.Splits | None = None,
                  examples: int | None = None, epochs: int | None = None,
                  learning_rate: float | None = None, loss_threshold: float = OVERFIT_LOSS,
                  model_fn: ModelFn | None = None, model: Any = None,
                  data: Any = None) -> CheckResult:
    """Overfit a tiny stratified subset: 100 % train accuracy with the loss near 0.

    Lecture 6, "Make sure that you can overfit very small portion of the training data":
    20 examples, regularization off, no augmentation, full-batch updates, up to 200 epochs.
    Uses the config's optimizer at its (constant) learning rate and never tunes it: a
    failure reports that rate.

    Args:
        config: a full or partial config tree.
        splits: already-loaded data.
        model: the user's network (a ``keras.Model`` or a function returning one), as
            ``recipes.prepare.prepare`` takes it; default ``config.model``.
        data: the user's data (``recipes.data.from_user``'s forms); default ``splits``.
        examples: subset size; default ``babysit.overfit_examples``.
        epochs: most full-batch epochs; default ``babysit.overfit_epochs``. Stops early once
            the train accuracy is 100 % and the loss is below ``loss_threshold``.
        learning_rate: overrides ``optimizer.learning_rate``.
        loss_threshold: "near 0".
        model_fn: ``(config, input_shape, num_classes) -> keras.Model`` instead of
            ``models.build`` (uncompiled).

    Returns:
        A CheckResult; ``measured`` is the final train accuracy, ``expected`` 1.0.
    """
    changes = {**NO_REGULARIZATION, "train.full_batch": True}
    s = setup(config, _data(data, splits), changes, augment=False, model=model)
    cfg = s.config
    n = int(cfg.babysit.overfit_examples if examples is None else examples)
    max_epochs = int(cfg.babysit.overfit_epochs if epochs is None else epochs)
    lr = float(cfg.optimizer.learning_rate if learning_rate is None else learning_rate)
    idx = stratified_subset(s.splits.train.y, n, seed=cfg.train.seed)
    x, y = s.splits.train.x[idx], s.splits.train.y[idx]
    model = s.model(learning_rate=lr, model_fn=model_fn)
    stop = _StopWhenMemorized(loss_threshold)
    model.fit(s.dataset(x, y, training=True).repeat(), steps_per_epoch=1, epochs=max_epochs,
              callbacks=[stop], verbose=0, shuffle=False)
    loss, acc = _evaluate(model, s.dataset(x, y, training=False))
    passed = bool(acc >= 1.0 and loss < loss_threshold)
    verdict = (f"overfit {len(y)} examples: train accuracy {acc:.1%}, loss {loss:.4f} after "
               f"{stop.epochs} of {max_epochs} full-batch epochs ({_optimizer_text(cfg, lr)}, "
               f"regularization off): {_status(passed)}")
    if passed:
        advice = "the model and the pipeline can learn: move on to the learning-rate range"
    elif acc >= 1.0:
        advice = (f"100 % accuracy but the loss is still {loss:.3f} after {max_epochs} "
                  f"epochs: lr {lr:.3g} is slow for this model; train longer or check the "
                  "lr range")
    else:
        advice = (f"a network cannot memorize {len(y)} examples: the model or the pipeline is "
                  f"broken (labels misaligned with inputs, outputs not connected, frozen "
                  f"weights), or lr {lr:.3g} ({cfg.optimizer.name}) is far off — try the "
                  "learning-rate range first, then come back")
    curve = stop.losses
    return CheckResult("overfit_small", passed, acc, 1.0, verdict, advice,
                       {"examples": len(y), "epochs": stop.epochs, "max_epochs": max_epochs,
                        "loss": loss, "accuracy": acc, "learning_rate": lr,
                        "optimizer": cfg.optimizer.name, "loss_threshold": loss_threshold,
                        "loss_curve": [curve[i] for i in range(0, len(curve),
                                                               max(1, len(curve) // 50))]})


# --- input-independent baseline -------------------------------------------------------------


def input_independent_baseline(config: Any, *, splits: data.Splits | None = None,
                               epochs: int = BASELINE_EPOCHS, margin: float = BASELINE_MARGIN,
                               model_fn: ModelFn | None = None, model: Any = None,
                               data: Any = None) -> CheckResult:
    """The same network trained briefly on zeroed inputs must do clearly worse than on real ones.

    Karpathy 2019, "A recipe for training neural networks", "input-independent baseline": a
    net that does as well on zeros is not looking at its input.

    Args:
        config: a full or partial config tree (trained as configured, constant lr).
        splits: already-loaded data.
        model: the user's network (a ``keras.Model`` or a function returning one), as
            ``recipes.prepare.prepare`` takes it; default ``config.model``.
        data: the user's data (``recipes.data.from_user``'s forms); default ``splits``.
        epochs: training epochs of each of the two runs.
        margin: accuracy points the real run must win by.
        model_fn: ``(config, input_shape, num_classes) -> keras.Model`` (uncompiled).

    Returns:
        A CheckResult; ``measured`` is the real-input accuracy, ``expected`` the zero-input
        accuracy plus ``margin``. Accuracies are on the validation split (train if empty).
    """
    s = setup(config, _data(data, splits), model=model)
    split = s.splits.val if len(s.splits.val) else s.splits.train
    accs = {}
    for zero in (False, True):
        model = s.model(model_fn=model_fn)
        model.fit(s.dataset(s.splits.train.x, s.splits.train.y, training=True,
                            zero_inputs=zero), epochs=int(epochs), verbose=0, shuffle=False)
        accs[zero] = _evaluate(model, s.dataset(split.x, split.y, training=False,
                                                zero_inputs=zero))[1]
    real, zeros = accs[False], accs[True]
    majority = _majority(split.y, s.num_classes)
    passed = bool(real >= zeros + margin)
    where = "val" if len(s.splits.val) else "train"
    verdict = (f"{where} accuracy after {epochs} epochs: {real:.1%} on real inputs vs "
               f"{zeros:.1%} on zeroed inputs (majority class {majority:.1%}; needs a "
               f"{margin:.0%} lead): {_status(passed)}")
    advice = ("the network uses its input" if passed else
              "the network does as well without its input: inputs never reach the model "
              "(pipeline bug, preprocessing zeroing them), or it has not learned anything "
              "yet — check the overfit test and the learning rate")
    return CheckResult("input_independent_baseline", passed, real, zeros + margin, verdict,
                       advice, {"accuracy_real": real, "accuracy_zeros": zeros,
                                "majority_class": majority, "epochs": int(epochs),
                                "margin": margin, "split": where})


def _majority(y: np.ndarray, num_classes: int) -> float:
    """Accuracy of always answering the most frequent label (per tag for multi-label)."""
    y = np.asarray(y)
    if y.ndim == 2:  # multi-label 0/1 tags: the better constant answer per tag
        p = y.mean(axis=0)
        return float(np.mean(np.maximum(p, 1 - p)))
    return float(priors(y, num_classes).max())


# --- output bias at the class priors --------------------------------------------------------


# --- gradient check -------------------------------------------------------------------------


def gradient_check(model_or_config: Any, *, splits: data.Splits | None = None,
                   x: np.ndarray | None = None, y: np.ndarray | None = None,
                   input_shape: Sequence[int] | None = None, num_classes: int | None = None,
                   loss: keras.losses.Loss | None = None, batch: int = 4,
                   per_weight: int = 3, step: float = GRAD_STEP,
                   threshold: float = GRAD_THRESHOLD, seed: int = 0,
                   data: Any = None) -> CheckResult:
    """Analytic vs numeric (central-difference) gradients on random parameters, in float64.

    Lecture "Neural Networks 3", gradient checks: use the centered formula, double
    precision, relative error |a − n| / max(|a|, |n|) (< 1e-7 great, 1e-7..1e-5 OK with
    kinks), a tiny batch, a few random entries of every parameter. An entry that fails only
    because a ReLU/maxout kink lies within h is re-checked with h/10 and h/100 (the kink is
    then not crossed; a wrong gradient fails at every h). Entries whose gradient is below
    1e-3 are judged on absolute error (≤ threshold·1e-3), where float64 round-off
    (~1e-10 on a loss of ~2) would swamp their relative error.

    Args:
        model_or_config: a config tree (the model is built from ``config.model`` in
            float64), a ``keras.Model`` (converted to float64 when it is not), or a
            zero-argument callable returning a model (called with float64 as the default).
        splits: data giving the input shape and C for a config (else loaded).
        x: a batch of inputs; default seeded N(0, 1) inputs of ``input_shape``.
        y: its class ids; default random labels.
        input_shape: one example's shape (default the model's input shape).
        num_classes: C (default the model's output width).
        loss: default the config's loss (softmax cross-entropy for a model).
        batch: examples in the random batch.
        per_weight: random entries checked per trainable variable.
        step: h of the central difference.
        threshold: largest relative error that passes.
        seed: picks the entries and the random batch.
        data: the user's data (``recipes.data.from_user``'s forms), as ``splits``.

    Returns:
        A CheckResult; ``measured`` is the largest relative error, ``expected`` the threshold.
    """
    model, loss_cfg, input_shape, num_classes = _gradient_check_model(
        model_or_config, _data(data, splits), input_shape, num_classes)
    shape = tuple(input_shape or model.input_shape[1:])
    n_cls = int(num_classes or model.output_shape[-1])
    rng = np.random.default_rng(seed)
    xb = rng.standard_normal((batch, *shape)) if x is None else np.asarray(x)
    yb = rng.integers(0, n_cls, len(xb)) if y is None else np.asarray(y)
    with float64():
        loss_fn = loss or losses.get(loss_cfg, n_cls)
        xt = tf.constant(xb, tf.float64)
        yt = tf.one_hot(yb, n_cls, dtype=tf.float64)

    def objective() -> tf.Tensor:
        out = loss_fn(yt, model(xt, training=False))
        return out + tf.add_n(model.losses) if model.losses else out

    variables = list(model.trainable_variables)
    with tf.GradientTape() as tape:
        f0 = objective()
    grads = tape.gradient(f0, variables)
    rows, kinks = _compare_entries(variables, grads, objective, rng, per_weight, step,
                                   threshold)
    worst = max((r["relative_error"] for r in rows), default=0.0)
    passed = bool(worst <= threshold and rows)
    bad = sorted({r["weight"] for r in rows if r["relative_error"] > threshold})
    layers_text = ", ".join(custom_layers(model)) or "no custom layers"
    verdict = (f"gradient check ({layers_text}): max relative error {worst:.1e} over "
               f"{len(rows)} entries of {len(variables)} weights, float64, h={step:g} "
               f"(threshold {threshold:.0e}; {kinks} kink(s) re-checked): {_status(passed)}")
    advice = ("the analytic gradients match the numeric ones" if passed else
              f"wrong analytic gradient in {', '.join(bad)}: check the layer's call (a "
              "custom_gradient, a stop_gradient, a non-differentiable op) before training")
    return CheckResult("gradient_check", passed, worst, threshold, verdict, advice,
                       {"entries": rows, "kinks": kinks, "loss": float(f0),
                        "failing_weights": bad, "custom_layers": custom_layers(model)})


def _gradient_check_model(model_or_config: Any, splits: data.Splits | None,
                          input_shape: Sequence[int] | None, num_classes: int | None
                          ) -> tuple[keras.Model, Any, Sequence[int] | None, int | None]:
    """The float64 model to check, the config's loss branch (or None), shape and C."""
    if isinstance(model_or_config, keras.Model):
        return as_float64(model_or_config), None, input_shape, num_classes
    if callable(model_or_config) and not isinstance(model_or_config, Mapping):
        with float64():
            return model_or_config(), None, input_shape, num_classes
    cfg = configs.complete(model_or_config)
    if input_shape is None or num_classes is None:
        sp = load(cfg, splits)
        pre = prepare.fit_preprocessor(cfg, sp.train.x)
        input_shape = pipeline.output_shape(cfg, sp.info.input_shape, pre)
        num_classes = sp.info.num_classes
    keras.utils.set_random_seed(cfg.train.seed)
    with float64():
        model = models.build(cfg.model, input_shape, num_classes)
    return model, cfg.loss, input_shape, num_classes


def _compare_entries(variables: list, grads: list, objective: Callable[[], tf.Tensor],
                     rng: np.random.Generator, per_weight: int, step: float,
                     threshold: float) -> tuple[list[dict[str, Any]], int]:
    """Each variable's ``per_weight`` random entries: analytic vs numeric; kinks re-checked.

    An entry that fails only because a ReLU/maxout kink lies within h is re-checked with
    h/10 and h/100: the kink is then not crossed, while a wrong gradient fails at every h.
    """
    rows, kinks = [], 0
    for v, g in zip(variables, grads):
        g = np.zeros(v.shape) if g is None else np.asarray(tf.convert_to_tensor(g)).ravel()
        for i in rng.choice(g.size, size=min(per_weight, g.size), replace=False):
            analytic = float(g[i])
            err, numeric = _entry_error(v, int(i), analytic, step, objective)
            if err > threshold:  # a kink within h? smaller steps do not cross it
                for h in (step / 10, step / 100):
                    err_h, num_h = _entry_error(v, int(i), analytic, h, objective)
                    if err_h <= threshold:
                        kinks += 1
                        err, numeric = err_h, num_h
                        break
            rows.append({"weight": v.path, "index": int(i), "analytic": analytic,
                         "numeric": numeric, "relative_error": err})
    return rows, kinks


def _entry_error(v: keras.Variable, i: int, analytic: float, h: float,
                 objective: Callable[[], tf.Tensor]) -> tuple[float, float]:
    """Relative error of the central difference on entry ``i`` of ``v`` (restored after)."""
    original = keras.ops.convert_to_numpy(v)
    values = []
    for sign in (1.0, -1.0):
        w = original.copy().ravel()
        w[i] += sign * h
        v.assign(w.reshape(original.shape))
        values.append(float(objective()))
    v.assign(original)
    numeric = (values[0] - values[1]) / (2 * h)
    scale = max(abs(analytic), abs(numeric), GRAD_FLOOR)
    return abs(analytic - numeric) / scale, numeric


# --- the procedure --------------------------------------------------------------------------


#: The checks in the lecture's order (Lecture 6, then Karpathy 2019's baseline; the gradient
#: check only for models with custom layers: Keras's own layers have tested gradients).
CHECKS = ("initial_loss", "regularization_raises_loss", "overfit_small",
          "input_independent_baseline", "gradient_check")


def iter_checks(config: Any, *, splits: data.Splits | None = None,
                checks: Sequence[str] = CHECKS, model: Any = None,
                data: Any = None) -> Iterator[CheckResult]:
    """Runs ``checks`` (a subset of :data:`CHECKS`) in the lecture's order, one at a time.

    Args:
        config: a full or partial config tree.
        splits: already-loaded data (else loaded once for every check).
        checks: which checks; they always run in the order of :data:`CHECKS`.
        model: the user's network (see ``recipes.prepare.prepare``).
        data: the user's data (``recipes.data.from_user``'s forms).

    Yields:
        Each check's CheckResult as it finishes.

    Raises:
        ValueError: an unknown check name.
    """
    unknown = sorted(set(checks) - set(CHECKS))
    if unknown:
        raise ValueError(f"sanity checks {unknown} do not exist; use some of {list(CHECKS)}")
    splits = load(configs.complete(config), _data(data, splits))
    cfg = prepare.resolve(config, model=model, splits=splits)
    for name in CHECKS:
        if name not in checks:
            continue
        if name == "gradient_check":
            result = _gradient_check_if_custom(cfg, splits, model)
            if result is not None:
                yield result
            continue
        yield globals()[name](cfg, splits=splits, model=model)  # looked up now: tests may
        # replace one


def _gradient_check_if_custom(cfg: ml_collections.ConfigDict, splits: data.Splits,
                              model: Any) -> CheckResult | None:
    """The gradient check, only when the network has custom layers (Keras's are tested)."""
    if not prepare.model_source(model).is_users(cfg):
        probe = models.build(cfg.model, _probe_shape(cfg, splits), splits.info.num_classes)
        return gradient_check(cfg, splits=splits) if custom_layers(probe) else None
    p = prepare.prepare(cfg, model=model, splits=splits)
    if not custom_layers(p.model) or p.task.kind != tasks.MULTICLASS:
        return None  # one-hot targets only: the check's objective is a softmax over C
    shape = pipeline.output_shape(p.config, splits.info.input_shape, p.preprocessor)
    return gradient_check(p.fresh_model(), input_shape=shape,
                          num_classes=splits.info.num_classes,
                          loss=keras.losses.CategoricalCrossentropy(
                              from_logits=p.task.from_logits))


def run_all(config: Any, *, splits: data.Splits | None = None, checks: Sequence[str] = CHECKS,
            verbose: bool = False, model: Any = None, data: Any = None) -> list[CheckResult]:
    """Every sanity check (or ``checks``) in the lecture's order, on data loaded once.

    Lecture 6: initial loss → regularization raises the loss → overfit a tiny subset; then
    the input-independent baseline (Karpathy 2019); the gradient check only when the model
    has custom layers (Keras's own layers have tested gradients).

    Args:
        config: a full or partial config tree.
        splits: already-loaded data.
        checks: a subset of :data:`CHECKS` (run in that order).
        verbose: print each verdict as it comes.
        model: the user's network (see ``recipes.prepare.prepare``).
        data: the user's data (``recipes.data.from_user``'s forms).

    Returns:
        The CheckResults, in order.
    """
    results = []
    for result in iter_checks(config, splits=splits, checks=checks, model=model, data=data):
        if verbose:
            print(result.verdict)
        results.append(result)
    return results


def _probe_shape(cfg: ml_collections.ConfigDict, splits: data.Splits) -> tuple[int, ...]:
    if cfg.dataset.preprocess in preprocessing.SHAPE_FREE_METHODS:
        return tuple(pipeline.output_shape(cfg, splits.info.input_shape))
    pre = preprocessing.fit(splits.train.x, cfg.dataset.preprocess,
                            pca_components=cfg.dataset.pca_components,
                            zca_epsilon=cfg.dataset.zca_epsilon)
    return tuple(pipeline.output_shape(cfg, splits.info.input_shape, pre))
