"""Sanity checks before training: does the loss, the model and the pipeline make sense?

CS231n lecture 6, "Babysitting the learning process": check the initial loss (≈ ln C for
softmax), crank up regularization (the loss should go up), overfit a tiny subset (20
examples → 100 % train accuracy, loss ≈ 0), and (Neural Networks 3) check analytic against
numeric gradients; plus Karpathy's "A recipe for training neural networks" (2019): an
input-independent baseline (zeroed inputs must do worse) and "init well" (the logits' bias
at the log class priors).

Every check is usable alone, ``check(config, *, splits=None, ...) -> CheckResult``, and
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
from recipes import configs, data, io, losses, pipeline, prepare, preprocessing
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


def load(cfg: ml_collections.ConfigDict, splits: data.Splits | None = None) -> data.Splits:
    """``splits`` if given, else the dataset ``cfg.dataset`` names (``prepare.load_splits``)."""
    return splits if splits is not None else prepare.load_splits(cfg)


@dataclasses.dataclass
class Setup:
    """Data, fitted preprocessing and the model's input shape for one check."""

    config: ml_collections.ConfigDict
    splits: data.Splits
    preprocessor: preprocessing.Preprocessor
    input_shape: tuple[int, ...]

    @property
    def num_classes(self) -> int:
        return self.splits.info.num_classes

    def dataset(self, x: np.ndarray, y: np.ndarray, *, training: bool,
                zero_inputs: bool = False) -> tf.data.Dataset:
        """The config's pipeline over (x, y); ``zero_inputs`` zeroes what the model sees."""
        ds = pipeline.make(x, y, self.config, training=training, num_classes=self.num_classes,
                           preprocessor=self.preprocessor, seed=self.config.train.seed)
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
        keras.utils.set_random_seed(cfg.train.seed)  # same init for every run of a check
        if model is None:
            build = model_fn or (lambda c, shape, n: models.build(c.model, shape, n))
            model = build(cfg, self.input_shape, self.num_classes)
            if cfg.train.get("prior_bias", False) and cfg.loss.name == "softmax":
                init_output_bias(model, self.splits.train.y, self.num_classes)  # as prepare
        lr = float(cfg.optimizer.learning_rate if learning_rate is None else learning_rate)
        return prepare.compile_model(model, cfg, num_classes=self.num_classes, learning_rate=lr)


def setup(config: Any, splits: data.Splits | None = None,
          changes: Mapping[str, Any] | None = None, *, augment: bool = True,
          constant_lr: bool = True) -> Setup:
    """Completes the config, loads the data and fits preprocessing on the training split.

    The same steps as ``recipes.train.prepare`` (whose checks the config goes through), so a
    check sees exactly what training will see.
    """
    cfg = configure(config, changes, augment=augment, constant_lr=constant_lr)
    p = prepare.prepare(cfg, splits=load(cfg, splits))
    shape = pipeline.output_shape(cfg, p.splits.info.input_shape, p.preprocessor)
    return Setup(p.config, p.splits, p.preprocessor, tuple(shape))


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
    loss, acc = model.evaluate(ds, verbose=0)
    return float(loss), float(acc)


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
                 model_fn: ModelFn | None = None) -> CheckResult:
    """Loss at initialization ≈ −ln(1/C) for softmax, (C − 1)·Δ for the SVM.

    Lecture 6, "Double check that the loss is reasonable": regularization off, the loss of
    the untrained network on the training data should be the loss of uniform scores.

    Args:
        config: a full or partial config tree.
        splits: already-loaded data (else ``config.dataset`` is loaded).
        tolerance: relative tolerance |loss − expected| / expected; default
            ``babysit.initial_loss_tolerance``.
        examples: training examples the loss is averaged over (a few batches).
        model_fn: ``(config, input_shape, num_classes) -> keras.Model`` instead of
            ``models.build`` (uncompiled; compiled here with the config's loss).

    Returns:
        A CheckResult; ``measured`` is the loss, ``expected`` ln C (or the prior-bias value
        when the logits' bias is set, see :func:`init_output_bias`; or (C − 1)·Δ for svm).
    """
    s = setup(config, splits, NO_REGULARIZATION, augment=False)
    cfg, n_cls = s.config, s.num_classes
    tol = float(cfg.babysit.initial_loss_tolerance if tolerance is None else tolerance)
    idx = sample(len(s.splits.train), examples, cfg.train.seed)
    x, y = s.splits.train.x[idx], s.splits.train.y[idx]
    model = s.model(model_fn=model_fn)
    loss, _ = _evaluate(model, s.dataset(x, y, training=False))
    layer = logits_layer(model)
    bias = None if layer is None else keras.ops.convert_to_numpy(layer.bias)
    expected = expected_initial_loss(cfg.loss, y, n_cls, bias)
    uniform = expected_initial_loss(cfg.loss, y, n_cls)
    svm = cfg.loss.name in ("svm", "hinge")
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
    if abs(expected - uniform) > 1e-6:
        what = f"prior-bias value {expected:.3f}"
    elif svm:
        what = f"(C−1)·Δ = {expected:.3f}"
    else:
        what = f"ln({n_cls}) = {expected:.3f}"
    verdict = (f"initial loss {loss:.3f} vs {what} ({rel:+.1%}, tolerance {tol:.0%}, "
               f"{len(y)} examples, regularization off): {_status(passed)}")
    if passed:
        advice = ("the untrained network scores the classes uniformly, as it should"
                  + (" (valid for small weights only with the SVM loss)" if svm else ""))
    else:
        advice = _initial_loss_advice(loss, expected, stats, svm)
    return CheckResult("initial_loss", passed, loss, expected, verdict, advice, stats)


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
                               examples: int = INITIAL_LOSS_EXAMPLES) -> CheckResult:
    """The same initialized network with a large L2 strength must have a higher loss.

    Lecture 6, "Double check that the loss is reasonable": "crank up regularization — loss
    went up, good" (2.30 → 3.07 in the lecture). Proves the penalty reaches the loss.

    Args:
        config: a full or partial config tree.
        splits: already-loaded data.
        l2: the large L2 strength (Keras's l2·Σw² on every kernel).
        examples: training examples the loss is averaged over.

    Returns:
        A CheckResult; ``measured`` is the loss with ``l2``, ``expected`` the loss without.
    """
    s = setup(config, splits, NO_REGULARIZATION, augment=False)
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
                  model_fn: ModelFn | None = None) -> CheckResult:
    """Overfit a tiny stratified subset: 100 % train accuracy with the loss near 0.

    Lecture 6, "Make sure that you can overfit very small portion of the training data":
    20 examples, regularization off, no augmentation, full-batch updates, up to 200 epochs.
    Uses the config's optimizer at its (constant) learning rate and never tunes it: a
    failure reports that rate.

    Args:
        config: a full or partial config tree.
        splits: already-loaded data.
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
    s = setup(config, splits, changes, augment=False)
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
                               model_fn: ModelFn | None = None) -> CheckResult:
    """The same network trained briefly on zeroed inputs must do clearly worse than on real ones.

    Karpathy 2019, "A recipe for training neural networks", "input-independent baseline": a
    net that does as well on zeros is not looking at its input.

    Args:
        config: a full or partial config tree (trained as configured, constant lr).
        splits: already-loaded data.
        epochs: training epochs of each of the two runs.
        margin: accuracy points the real run must win by.
        model_fn: ``(config, input_shape, num_classes) -> keras.Model`` (uncompiled).

    Returns:
        A CheckResult; ``measured`` is the real-input accuracy, ``expected`` the zero-input
        accuracy plus ``margin``. Accuracies are on the validation split (train if empty).
    """
    s = setup(config, splits)
    split = s.splits.val if len(s.splits.val) else s.splits.train
    accs = {}
    for zero in (False, True):
        model = s.model(model_fn=model_fn)
        model.fit(s.dataset(s.splits.train.x, s.splits.train.y, training=True,
                            zero_inputs=zero), epochs=int(epochs), verbose=0, shuffle=False)
        accs[zero] = _evaluate(model, s.dataset(split.x, split.y, training=False,
                                                zero_inputs=zero))[1]
    real, zeros = accs[False], accs[True]
    majority = float(priors(split.y, s.num_classes).max())
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


# --- output bias at the class priors --------------------------------------------------------


# --- gradient check -------------------------------------------------------------------------


def gradient_check(model_or_config: Any, *, splits: data.Splits | None = None,
                   x: np.ndarray | None = None, y: np.ndarray | None = None,
                   input_shape: Sequence[int] | None = None, num_classes: int | None = None,
                   loss: keras.losses.Loss | None = None, batch: int = 4,
                   per_weight: int = 3, step: float = GRAD_STEP,
                   threshold: float = GRAD_THRESHOLD, seed: int = 0) -> CheckResult:
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

    Returns:
        A CheckResult; ``measured`` is the largest relative error, ``expected`` the threshold.
    """
    model, loss_cfg, input_shape, num_classes = _gradient_check_model(
        model_or_config, splits, input_shape, num_classes)
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
                checks: Sequence[str] = CHECKS) -> Iterator[CheckResult]:
    """Runs ``checks`` (a subset of :data:`CHECKS`) in the lecture's order, one at a time.

    Args:
        config: a full or partial config tree.
        splits: already-loaded data (else loaded once for every check).
        checks: which checks; they always run in the order of :data:`CHECKS`.

    Yields:
        Each check's CheckResult as it finishes.

    Raises:
        ValueError: an unknown check name.
    """
    unknown = sorted(set(checks) - set(CHECKS))
    if unknown:
        raise ValueError(f"sanity checks {unknown} do not exist; use some of {list(CHECKS)}")
    cfg = configs.complete(config)
    splits = load(cfg, splits)
    for name in CHECKS:
        if name not in checks:
            continue
        if name == "gradient_check":
            probe = models.build(cfg.model, _probe_shape(cfg, splits), splits.info.num_classes)
            if not custom_layers(probe):
                continue
        yield globals()[name](cfg, splits=splits)  # looked up now: tests may replace one


def run_all(config: Any, *, splits: data.Splits | None = None, checks: Sequence[str] = CHECKS,
            verbose: bool = False) -> list[CheckResult]:
    """Every sanity check (or ``checks``) in the lecture's order, on data loaded once.

    Lecture 6: initial loss → regularization raises the loss → overfit a tiny subset; then
    the input-independent baseline (Karpathy 2019); the gradient check only when the model
    has custom layers (Keras's own layers have tested gradients).

    Args:
        config: a full or partial config tree.
        splits: already-loaded data.
        checks: a subset of :data:`CHECKS` (run in that order).
        verbose: print each verdict as it comes.

    Returns:
        The CheckResults, in order.
    """
    results = []
    for result in iter_checks(config, splits=splits, checks=checks):
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
