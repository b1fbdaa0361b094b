"""Checks before training, on any model: output vs loss vs labels, inputs, layers, learning rate.

UMLAUT (Schoop et al., CHI 2021) checks a Keras program before it trains: inputs in range,
a softmax/``from_logits`` that matches the loss, a learning rate inside [1e-7, 0.01], dropout
at most 0.5. DeepDiagnosis (Wardat et al., ICSE 2022) compares the output range with the
labels. CS231n lecture 6 ("babysitting the learning process") asks for the same before the
first epoch: preprocessed inputs, a sensible loss at init (≈ ln C), a working learning rate.

:func:`inspect` measures rather than reads: it runs the network once on a sample of the
inputs *as the network sees them* (≤ 256 examples, no training, the user's weights are never
touched) and compares what comes out (range, row sums, spread across examples) with the loss
and the labels. Keras 3 on TensorFlow computes cross-entropy from the logits that a softmax
or sigmoid output layer keeps (``_keras_logits``), so some mismatches are silently corrected
while others leave the training loss near zero with accuracy at chance. Each rule's severity
follows what was measured on sklearn digits (a Dense(32, relu) MLP, Adam 1e-2, 10 epochs;
numbers in the constants' comments and the evidence, the Keras behaviours pinned by
tests/test_preflight.py): ``error`` where training or the predictions break, ``warning``
where Keras corrects it today but the model is still wrong or fragile.
:func:`run` does the whole thing from the same arguments as ``recipes.train.run``, and
returns the findings that ``prepare`` would have raised as errors.

Layer 5: imports prepare and the building blocks, never a procedure.
"""

from __future__ import annotations

import dataclasses
import math
import re
import warnings
from collections.abc import Iterator
from typing import Any

import keras
import ml_collections
import numpy as np
import tensorflow as tf

from models import inspect as models_inspect
from models import transform as transforms
from recipes import causes, configs, pipeline, prepare, tasks
from recipes import data as data_lib

__all__ = ["inspect", "run", "looks_like_scaled_labels", "relabel", "relabel_splits",
           "linear_stacks", "max_dropout"]

SAMPLE_SIZE = 256  # examples the network sees once (one forward pass, ~10 ms for an MLP)
# Input scale: the 99th percentile of |x| (robust to the rare pixel that standardization
# blows up: standardized digits reach |x| = 35 but q99 = 2.8; fashion-mnist q99 = 2.6).
# Measured on digits (Dense(32, relu) MLP, 10 epochs): raw 0..16 (q99 = 16) still trains
# (val 0.95) but its initial loss is 11 vs ln 10 = 2.3; raw 0..255 (q99 = 256) breaks it:
# SGD 1e-2 stays at chance (0.09), Adam 1e-3 reaches 0.85 (vs 0.96), initial loss 176.
INPUT_QUANTILE = 0.99
INPUT_SCALE_WARNING = 10.0
INPUT_SCALE_ERROR = 100.0
# Per-feature scales: p95/p5 over the non-constant features of each one's range max|x − median|
# (10 samples of 256): images stay low (raw digits 16, fashion-mnist 3.1, standardized ≤ 11;
# the std instead reaches 104 on digits, whose rare pixels barely vary); raw tabular data is
# far above (sklearn wine 1070, breast cancer 6e4, digits with half its columns ×100: 619).
FEATURE_SPREAD = 100.0
CONSTANT_WARNING = 0.5  # digits has 7.8 % constant pixels, fashion 0.5 %: info below half
# Dropout (two Dense(64) + Dropout(r), 20 epochs, val accuracy): 0.5 → 0.98, 0.7 → 0.95,
# 0.8 → 0.84, 0.9 → 0.09 (chance): a warning above 0.5 (UMLAUT), an error above 0.8.
DROPOUT_WARNING = 0.5
DROPOUT_ERROR = 0.8
# Learning-rate ranges (10 epochs, digits MLP). Adam/RMSprop: 1e-5 does not train (loss
# 2.61 → 2.50), 1e-4 is slow (val 0.50), 1e-3..3e-2 train (val 0.96-0.99), 0.1 jumps (val
# loss 1.6 vs 0.04), ≥ 0.3 explodes. Adagrad: 1e-4 nothing, 1e-2..1 train, 3 val loss 10.
# SGD: 1e-4 nothing, 1e-2..1 train, 3 NaN; momentum 0.9: 0.3 diverges, so SGD is judged on
# the effective rate lr / (1 − momentum) (Goh 2017, "Why momentum really works"). The low
# ends leave fine-tuning rates (Adam 1e-5) alone; the Adam top is UMLAUT's 0.01.
LEARNING_RATE_RANGES = {"adaptive": (1e-5, 1e-2), "adagrad": (1e-4, 1.0), "sgd": (1e-4, 1.0)}
ADAPTIVE = ("adam", "adamw", "nadam", "adamax", "rmsprop", "lion", "lamb")
SGD = ("sgd", "momentum", "nesterov")
# Initial loss: correct MLPs start at 1.0-1.4 × ln C (Glorot 2.3-2.6, He 2.5-3.2 for C = 10);
# N(0, 1) weights give 36 ×, a bias of std 5 3 ×, raw 0..16 inputs 5 ×.
INITIAL_LOSS_FACTOR = 2.0
MAX_SCALED_CLASSES = 1000  # distinct values a scaled class-id label may take
SORTED_NEIGHBOURS = 0.5  # equal consecutive labels: random order gives Σ p² (0.1 for 10)

_LOSS_FAMILIES = (("sparse", ("sparsecategorical",)),
                  ("categorical", ("categoricalcrossentropy", "categoricalfocal")),
                  ("binary", ("binarycrossentropy", "binaryfocal")),
                  ("regression", ("meansquared", "meanabsolute", "mse", "mae", "huber",
                                  "logcosh", "msle", "mape")))
_CROSS_ENTROPY = ("sparse", "categorical", "binary")
_LOGIT_ACTIVATIONS = ("linear", "log_softmax")  # scores a from_logits loss may take


def _finding(code: str, severity: str, cause: str, evidence: str, advice: str,
             ctx: causes.Context, **numbers: Any) -> causes.Finding:
    """One finding with its cause's remedies for ``ctx``."""
    return causes.Finding(code=code, severity=severity, evidence=evidence, advice=advice,
                          data=numbers, cause=cause, remedies=causes.remedies(cause, ctx))


# --- labels ----------------------------------------------------------------------------------


def _flat_labels(y: Any) -> np.ndarray:
    y = np.asarray(y)
    return y[:, 0] if y.ndim == 2 and y.shape[1] == 1 else y


def looks_like_scaled_labels(y: Any) -> bool:
    """Whether float labels are class ids divided by a constant (``y / 255``, ``y / 9``).

    True for (N,) or (N, 1) finite floats in [0, 1], not all integers, taking 2 to
    ``MAX_SCALED_CLASSES`` distinct values that repeat (a class has several examples) and are
    integer multiples of their smallest gap or of 1/255.
    """
    y = _flat_labels(y)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.floating) or not len(y):
        return False
    if not np.isfinite(y).all() or (y == np.round(y)).all() or y.min() < 0 or y.max() > 1:
        return False
    v = np.unique(y.astype(np.float64))
    if not 2 <= len(v) <= min(MAX_SCALED_CLASSES, max(2, len(y) // 2)):
        return False
    for scale in (1.0 / np.diff(v).min(), 255.0, 256.0):
        k = v * scale
        if np.allclose(k, np.round(k), atol=1e-3):
            return True
    return False


def relabel(y: Any) -> np.ndarray:
    """Scaled labels back to class ids 0..C-1: the rank of each distinct value (int64, (N,))."""
    y = _flat_labels(y)
    return np.searchsorted(np.unique(y), y).astype(np.int64)


def _scaled_labels_finding(y: np.ndarray, ctx: causes.Context) -> causes.Finding:
    v = np.unique(_flat_labels(y))
    step = float(np.diff(v).min())
    return _finding(
        "scaled_labels", "error", "scaled_labels",
        f"labels are floats in [{v[0]:.3g}, {v[-1]:.3g}] taking {len(v)} values in steps of "
        f"{step:.4g} (= 1/{1 / step:.4g}): class ids divided like pixels; a sparse loss casts "
        "them all to class 0 (measured: loss → 0, accuracy 0.10 = chance on digits)",
        "labels are class ids 0..C-1: scale the inputs, never the labels (relabel by rank)",
        ctx, classes=len(v), step=step, low=float(v[0]), high=float(v[-1]))


def _label_checks(y: np.ndarray, ctx: causes.Context) -> tuple[np.ndarray, list]:
    """The labels as ids when they were scaled (with that finding); else unchanged."""
    if looks_like_scaled_labels(y):
        return relabel(y), [_scaled_labels_finding(y, ctx)]
    y = np.asarray(y)
    flat = _flat_labels(y)
    if flat.ndim == 1 and np.issubdtype(flat.dtype, np.floating) and not (
            np.isfinite(flat).all() and (flat == np.round(flat)).all()):
        raise ValueError("labels hold non-integer values that are not scaled class ids: "
                         "regression (continuous targets) is not supported")
    return y, []


# --- inputs ----------------------------------------------------------------------------------


def _nonfinite_finding(values: int, rows: int, n: int, ctx: causes.Context) -> causes.Finding:
    return _finding(
        "nonfinite_inputs", "error", "unnormalized_inputs",
        f"{values} input values are NaN or inf, in {rows} of {n} examples: every loss and "
        "gradient they touch is NaN",
        "clean, impute or drop those examples before training", ctx,
        nonfinite=values, examples=rows, of=n)


def _input_checks(x: np.ndarray, ctx: causes.Context) -> list[causes.Finding]:
    """Scale, per-feature spread, constant features and NaN/inf of the inputs as seen."""
    s = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    bad = ~np.isfinite(s)
    if bad.any():
        return [_nonfinite_finding(int(bad.sum()), int(bad.any(axis=1).sum()), len(s), ctx)]
    found = []
    q = float(np.quantile(np.abs(s), INPUT_QUANTILE))
    if q > INPUT_SCALE_WARNING:
        found.append(_finding(
            "unscaled_inputs", "error" if q > INPUT_SCALE_ERROR else "warning",
            "unnormalized_inputs",
            f"inputs far outside [-1, 1]: 99 % of |x| ≤ {q:.3g} (min {s.min():.3g}, max "
            f"{s.max():.3g}, mean {s.mean():.3g}); the first layer's outputs and the initial "
            "loss grow with them",
            "lecture 6: zero-center and normalize the inputs (subtract the training mean, "
            "divide by the std, or scale pixels to [0, 1])", ctx,
            q99=q, min=float(s.min()), max=float(s.max()), mean=float(s.mean())))
    found += _feature_checks(s, ctx)
    return found


def _feature_checks(s: np.ndarray, ctx: causes.Context) -> list[causes.Finding]:
    """Constant features and features on very different scales."""
    if len(s) < 2:
        return []
    std = s.std(axis=0)
    const = std == 0
    frac = float(const.mean())
    found = []
    if frac > 0:
        sev = "error" if frac == 1 else "warning" if frac > CONSTANT_WARNING else "info"
        found.append(_finding(
            "constant_inputs", sev, "unnormalized_inputs",
            f"{int(const.sum())} of {const.size} input features ({frac:.0%}) are constant over "
            f"{len(s)} examples" + (": every example looks the same to the network"
                                    if frac == 1 else ""),
            "constant features carry no information: check the loading and preprocessing "
            "(a few constant border pixels are normal)", ctx,
            constant=int(const.sum()), features=int(const.size), fraction=frac))
    ranges = np.abs(s - np.median(s, axis=0)).max(axis=0)[~const]
    if len(ranges) >= 2:
        lo, hi = np.quantile(ranges, [0.05, 0.95])
        spread = float(hi / lo)
        if spread > FEATURE_SPREAD:
            found.append(_finding(
                "feature_scales", "warning", "unnormalized_inputs",
                f"input features on different scales: their ranges max|x − median| go from "
                f"{lo:.3g} to {hi:.3g} (5th to 95th percentile, {spread:.3g} ×)",
                "lecture 6: standardize each feature (its own mean and std)", ctx,
                range_p5=float(lo), range_p95=float(hi), spread=spread))
    return found


# --- outputs, loss and labels ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Loss:
    """The loss the run uses, as far as the output/label rules care."""

    name: str
    family: str  # sparse | categorical | binary | regression | other
    from_logits: bool
    given: bool  # compiled or passed (False: the run picks one that fits the task)
    fn: Any  # a callable loss for measuring it, or None


@dataclasses.dataclass(frozen=True)
class _Seen:
    """What the model's outputs are, measured on the sample."""

    units: int
    activation: str  # the last layer's, by name
    kind: str  # softmax | sigmoid | logits | other
    keras_logits: bool  # Keras keeps the logits: a named softmax/sigmoid on TensorFlow
    low: float
    high: float
    outside: float  # fraction of outputs outside [0, 1]
    row_sum: float  # mean over examples of the outputs summed
    spread: float  # mean over units of the std across examples
    examples: int


def _loss_family(loss: Any) -> str:
    conf = loss.get("class_name", "") if isinstance(loss, dict) else type(loss).__name__
    text = re.sub("[^a-z]", "", f"{tasks.loss_name(loss)} {conf}".lower())
    for family, keys in _LOSS_FAMILIES:
        if any(k in text for k in keys):
            return family
    return "other"


def _loss_fn(loss: Any) -> Any:
    """A callable Keras loss (a ``Loss`` object where one exists) for ``loss``, or None."""
    try:
        if isinstance(loss, str):
            camel = "".join(p.capitalize() for p in loss.split("_"))
            try:
                return keras.losses.get(camel)
            except ValueError:
                return keras.losses.get(loss)
        if isinstance(loss, dict):
            return keras.saving.deserialize_keras_object(loss)
        return loss if callable(loss) else None
    except Exception:  # noqa: BLE001 - an unregistered custom loss: not measured
        return None


def _loss_facts(spec: Any, kind: str, seen: _Seen, y: np.ndarray) -> _Loss:
    """The given loss, or (None, or one per output) the one the run picks for the task."""
    one = spec is not None and not isinstance(spec, list | tuple | dict) or (
        isinstance(spec, dict) and "class_name" in spec)
    if one:
        return _Loss(tasks.loss_name(spec), _loss_family(spec),
                     bool(tasks.loss_from_logits(spec)), True, _loss_fn(spec))
    logits = seen.activation not in tasks.PROBABILITY_ACTIVATIONS
    if kind != tasks.MULTICLASS:
        return _Loss("binary_crossentropy", "binary", logits, False,
                     keras.losses.BinaryCrossentropy(from_logits=logits))
    if np.ndim(y) == 1:
        return _Loss("sparse_categorical_crossentropy", "sparse", logits, False,
                     keras.losses.SparseCategoricalCrossentropy(from_logits=logits))
    return _Loss("categorical_crossentropy", "categorical", logits, False,
                 keras.losses.CategoricalCrossentropy(from_logits=logits))


def _forward(model: keras.Model, x: np.ndarray) -> Any:
    """The model's (first) output on ``x`` in inference mode; ValueError if the pass fails."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Keras warns about a softmax over one unit
            out = model(tf.convert_to_tensor(x, tf.float32), training=False)
    except Exception as e:  # noqa: BLE001 - a shape or dtype error from any layer
        raise ValueError(f"model: a forward pass on inputs of shape {tuple(x.shape)} failed "
                         f"({type(e).__name__}: {' '.join(str(e).split())[:300]})") from None
    return out[0] if isinstance(out, list | tuple) else out


def _seen(model: keras.Model, out: Any) -> _Seen:
    o = np.asarray(keras.ops.convert_to_numpy(out), dtype=np.float64)
    n = len(o)
    o = o.reshape(-1, o.shape[-1] if o.ndim > 1 else 1)  # (N·positions, units)
    act = tasks.output_activation(model)
    inside = bool(o.min() >= 0 and o.max() <= 1)
    sums = o.sum(axis=1)
    if act in tasks.PROBABILITY_ACTIVATIONS:
        kind = act
    elif act == "hard_sigmoid" or act in _LOGIT_ACTIVATIONS and inside:  # measured
        kind = "softmax" if o.shape[1] > 1 and np.allclose(sums, 1, atol=1e-3) else "sigmoid"
    else:
        kind = "logits" if act in _LOGIT_ACTIVATIONS else "other"
    # Keras finds the logits only on TensorFlow and only on the layer's own tensor: a float16
    # output (mixed precision) is cast for the loss, and the cast tensor has none.
    keras_logits = (kind == act and keras.backend.backend() == "tensorflow"
                    and keras.backend.standardize_dtype(out.dtype) == keras.config.floatx())
    return _Seen(o.shape[1], act, kind, keras_logits, float(o.min()), float(o.max()),
                 float(((o < 0) | (o > 1)).mean()), float(sums.mean()),
                 float(o.std(axis=0).mean()), n)


def _task_kind(units: int, num_classes: int, multilabel: bool) -> str:
    if multilabel:
        return tasks.MULTILABEL
    return tasks.BINARY if num_classes == 2 and units == 1 else tasks.MULTICLASS


def _range(seen: _Seen) -> str:
    return f"range [{seen.low:.3g}, {seen.high:.3g}], {seen.outside:.0%} outside [0, 1]"


_OUTPUT_ADVICE = ("CS231n: a softmax over C units with categorical cross-entropy for one class "
                  "per example; one sigmoid unit (or one per tag) with binary cross-entropy "
                  "for yes/no labels; from_logits=True exactly when the last layer has no "
                  "softmax/sigmoid")


def _units_rule(seen: _Seen, loss: _Loss, kind: str, c: int) -> tuple[str, str] | None:
    """Output units against the classes: (code, evidence) of an error, or None."""
    if seen.units == 1 and (seen.activation == "softmax" or seen.low == seen.high == 1.0):
        return "softmax_one_unit", (
            f"a softmax over 1 output unit: all {seen.examples} predictions are "
            f"{seen.high:.3f} (spread {seen.spread:.1e}): the prediction is the same for "
            "every input; under binary cross-entropy Keras still trains the hidden logit, so "
            "the loss falls to ~0 while accuracy stays at chance (measured 0.005 / 0.50)")
    if kind != tasks.BINARY and seen.units != c:
        what = f"{c} 0/1 tags" if kind == tasks.MULTILABEL else f"{c} classes"
        return "output_units", (
            f"the last layer has {seen.units} units but the labels have {what}"
            + (" (or 1 sigmoid unit for 2 classes)" if c == 2 else "")
            + ("; Keras raises on ids ≥ the units (on GPU: NaN)" if seen.units < c else
               "; the extra units are never a label, and babysit refuses the mismatch"))
    if seen.units == 1 and loss.family == "sparse":
        return "sparse_loss_one_unit", (
            f"{loss.name} on 1 output unit: a softmax over one unit, and the label 1 is out "
            "of range: Keras raises (InvalidArgumentError) on 0/1 labels")
    if seen.units == 1 and loss.family == "categorical":
        return "categorical_loss_one_unit", (
            f"{loss.name} on 1 output unit is a softmax over one unit: the loss is 0 for "
            "every input and nothing trains (measured: loss 0.000, accuracy 0.50)")
    return None


def _activation_rule(seen: _Seen, loss: _Loss, kind: str, y: np.ndarray
                     ) -> tuple[str, str, str] | None:
    """The last layer's activation against the loss: (code, severity, evidence) or None."""
    fam, probs = loss.family, seen.kind in ("softmax", "sigmoid")
    if kind == tasks.MULTILABEL:
        tags = float(np.mean(np.sum(y, axis=-1))) if np.ndim(y) == 2 else float("nan")
        if seen.kind == "softmax":
            return "softmax_multilabel", "error", (
                f"a softmax over {seen.units} independent tags makes them compete (outputs sum "
                f"to {seen.row_sum:.2f}) while examples carry {tags:.2f} tags on average "
                "(measured: 0.77 tag accuracy vs 0.999 with sigmoid)")
        if fam in ("sparse", "categorical"):
            return "categorical_loss_multilabel", "error", (
                f"{loss.name} treats {seen.units} independent tags as one class per example "
                f"(examples carry {tags:.2f} tags on average; measured: tag accuracy at chance)")
    if fam not in _CROSS_ENTROPY:
        return None
    if probs and loss.from_logits:
        fixed = seen.keras_logits
        return "probabilities_as_logits", "warning" if fixed else "error", (
            f"{seen.kind} outputs ({_range(seen)}) fed to {loss.name}(from_logits=True): "
            + ("Keras on TensorFlow takes the layer's logits instead, so this run trains, but "
               "under mixed precision, JAX or PyTorch it takes a softmax of probabilities "
               "(measured: loss stalls at 1.47 vs 0.03)" if fixed else
               "the loss takes a softmax of probabilities (measured: stalls at 1.47 vs 0.03)"))
    if not probs and not loss.from_logits:
        code = "logits_as_probabilities" if seen.kind == "logits" else "non_probability_output"
        return code, "error", (
            f"{'no softmax/sigmoid' if seen.kind == 'logits' else 'a ' + seen.activation} "
            f"on the last layer ({_range(seen)}) with {loss.name}(from_logits=False): Keras "
            "treats the outputs as probabilities, clipped to [1e-7, 1 − 1e-7] (measured "
            "accuracy 0.18-0.47 vs 1.0 on digits)")
    if seen.kind == "other":
        return "bounded_logits", "warning", (
            f"a {seen.activation} on the logits ({_range(seen)}): the scores the loss "
            "normalizes are cut or capped (measured: relu 0.995 vs 1.0 accuracy; tanh leaves "
            "a loss floor of 0.81 for 10 classes)")
    if kind == tasks.MULTICLASS and seen.kind == "sigmoid" and fam != "binary":
        return "sigmoid_categorical", "warning", (
            f"sigmoid outputs with {loss.name}: Keras on TensorFlow trains a softmax on the "
            f"sigmoid's logits (accuracy as with softmax), but the predictions are no "
            f"distribution: they sum to {seen.row_sum:.2f} per example on average")
    if kind == tasks.MULTICLASS and seen.kind == "softmax" and fam == "binary":
        return "softmax_binary_crossentropy", "warning", (
            f"a softmax with {loss.name} on {seen.units} classes: Keras on TensorFlow trains "
            "independent sigmoid yes/no scores on the softmax's logits, then predicts their "
            "softmax; the loss is not the one the outputs mean")
    return None


def _form_rule(seen: _Seen, loss: _Loss, y: np.ndarray) -> tuple[str, str] | None:
    """The labels' form against the given loss (the run's own pipeline converts them)."""
    if not loss.given:
        return None
    if loss.family == "sparse" and np.ndim(y) == 2 and np.shape(y)[1] > 1:
        return "onehot_with_sparse_loss", (
            f"labels are one-hot {tuple(np.shape(y))} but {loss.name} takes class ids (N,): "
            "Keras raises on the shapes")
    if loss.family in ("categorical", "binary", "regression") and seen.units > 1 \
            and _flat_labels(y).ndim == 1:
        return "ids_with_dense_loss", (
            f"labels are class ids {tuple(np.shape(y))} but {loss.name} takes targets shaped "
            f"like the {seen.units} outputs (one-hot): Keras raises on the shapes")
    return None


def _measure_loss(loss: _Loss, y: np.ndarray, out: Any) -> tuple[float | None, str]:
    """The loss of the untrained outputs, as training computes it; or the error Keras raises."""
    if loss.fn is None:
        return None, ""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = loss.fn(tf.convert_to_tensor(np.asarray(y, np.float32)), out)
        return float(np.mean(keras.ops.convert_to_numpy(value))), ""
    except Exception as e:  # noqa: BLE001 - what Keras raises is the evidence
        return None, f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"


def _initial_loss_check(value: float | None, loss: _Loss, kind: str, c: int,
                        ctx: causes.Context) -> list[causes.Finding]:
    """Lecture 6: the loss at init ≈ ln C (ln 2 per sigmoid unit)."""
    if value is None or loss.family not in _CROSS_ENTROPY:
        return []
    expected = math.log(2) if loss.family == "binary" else math.log(c)
    if math.isfinite(value) and value <= INITIAL_LOSS_FACTOR * expected:
        return []
    return [_finding(
        "initial_loss", "warning" if math.isfinite(value) else "error", "bad_initialization",
        f"loss at init {value:.3g} vs {expected:.3g} (" + ("ln 2 per unit" if loss.family ==
                                                            "binary" else f"ln {c}")
        + f"), {value / expected:.3g} × — the untrained scores are far from uniform",
        "lecture 6: with small random weights the first loss should be ≈ −ln(1/C); a larger "
        "one means weights (or inputs) too large at the start", ctx,
        loss=value, expected=expected, ratio=value / expected, kind=kind)]


def _output_checks(model: keras.Model, out: Any, y: np.ndarray, c: int, multilabel: bool,
                   spec: Any, ctx: causes.Context) -> list[causes.Finding]:
    """Output units/activation vs the loss vs the labels, measured on the outputs."""
    seen = _seen(model, out)
    kind = _task_kind(seen.units, c, multilabel)
    loss = _loss_facts(spec, kind, seen, y)
    nums = {"units": seen.units, "classes": c, "activation": seen.activation,
            "outputs": seen.kind, "loss": loss.name, "from_logits": loss.from_logits,
            "low": seen.low, "high": seen.high, "outside_01": seen.outside,
            "row_sum": seen.row_sum, "spread": seen.spread, "examples": seen.examples}
    hit = _units_rule(seen, loss, kind, c) or _form_rule(seen, loss, y)
    if hit:
        return [_finding(hit[0], "error", "output_loss_mismatch", hit[1], _OUTPUT_ADVICE, ctx,
                         **nums)]
    found = []
    rule = _activation_rule(seen, loss, kind, y)
    if rule:
        found.append(_finding(rule[0], rule[1], "output_loss_mismatch", rule[2],
                              _OUTPUT_ADVICE, ctx, **nums))
    if loss.family == "regression":
        found.append(_finding(
            "regression_loss", "warning", "output_loss_mismatch",
            f"{loss.name} on a classifier's {seen.kind} outputs: it trains (measured: softmax "
            "+ MSE 0.996 vs 1.0 on digits) but its gradient fades where a softmax saturates on "
            "the wrong class", "CS231n: cross-entropy (softmax) or hinge (SVM) for classes",
            ctx, **nums))
    value, error = _measure_loss(loss, y, out)
    if error:
        found.append(_finding(
            "loss_fails", "error", "output_loss_mismatch",
            f"Keras cannot compute {loss.name} on {seen.examples} examples: {error}",
            _OUTPUT_ADVICE, ctx, **nums))
    elif not any(f.severity == "error" for f in found):
        found += _initial_loss_check(value, loss, kind, c, ctx)
    return found


# --- layers ----------------------------------------------------------------------------------


def _history_names(obj: Any) -> Iterator[str]:
    """The layer names a serialized Functional config refers to (``keras_history``)."""
    if isinstance(obj, dict):
        if obj.get("class_name") == "__keras_tensor__":
            yield obj["config"]["keras_history"][0]
            return
        for value in obj.values():
            yield from _history_names(value)
    elif isinstance(obj, list | tuple):
        if len(obj) == 3 and isinstance(obj[0], str) and isinstance(obj[1], int):
            yield obj[0]
            return
        for value in obj:
            yield from _history_names(value)


def _layer_graph(model: keras.Model) -> tuple[dict, dict, set] | None:
    """(entries by name, successors by name, output names) from the model's config."""
    try:
        cfg = model.get_config()
    except Exception:  # noqa: BLE001 - a subclassed model: no graph to read
        return None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("layers"), list):
        return None
    named = {e["config"]["name"]: e for e in cfg["layers"] if e.get("class_name") != "InputLayer"}
    succ: dict[str, list[str]] = {n: [] for n in named}
    if isinstance(model, keras.Sequential):
        names = list(named)
        for a, b in zip(names, names[1:]):
            succ[a].append(b)
        return named, succ, set(names[-1:])
    for name, e in named.items():
        for src in dict.fromkeys(_history_names(e.get("inbound_nodes", []))):
            if src in succ:
                succ[src].append(name)
    return named, succ, set(_history_names(cfg.get("output_layers", [])))


def _is_kernel(entry: dict) -> bool:
    cfg = entry["config"]
    return ("activation" in cfg and any(k in cfg for k in transforms.KERNEL_KEYS)
            and "recurrent_initializer" not in cfg)


def _activation_name(entry: dict) -> str:
    value = entry["config"].get("activation")
    if value is None:
        return "linear"
    if isinstance(value, dict) and isinstance(value.get("config"), str):
        value = value["config"]
    return value.lower() if isinstance(value, str) else "custom"


def linear_stacks(model: keras.Model) -> list[tuple[str, str]]:
    """Pairs (a, b) of Dense/Conv layers where ``a`` has no activation and feeds ``b``.

    Through Dropout, reshapes, pooling and normalization (``models.transform.PASS_THROUGH``,
    the layers ``add_activations`` sees through); a merge or branch ends the path. A
    depthwise convolution feeding a pointwise one is an intended factorization, not counted.
    """
    graph = _layer_graph(model)
    if graph is None:
        return []
    named, succ, outputs = graph
    pairs = []
    for name, entry in named.items():
        if not _is_kernel(entry) or _activation_name(entry) != "linear" \
                or entry["class_name"].startswith("Depthwise"):
            continue
        current = name
        while len(succ[current]) == 1 and current not in outputs:
            after = named[succ[current][0]]
            if _is_kernel(after):
                pairs.append((name, succ[current][0]))
                break
            if after["class_name"] not in transforms.PASS_THROUGH:
                break
            current = succ[current][0]
    return pairs


def max_dropout(model: keras.Model) -> tuple[float, str]:
    """The highest dropout rate in the model (nested layers included) and its layer's name."""
    rates = [(float(getattr(layer, "rate", 0.0) or 0.0), layer.name)
             for layer in models_inspect.walk(model)
             if type(layer).__name__ in transforms.DROPOUTS]
    return max(rates, default=(0.0, ""))


def _layer_checks(model: keras.Model, ctx: causes.Context) -> list[causes.Finding]:
    """Stacked linear layers and strong dropout."""
    found = []
    pairs = linear_stacks(model)
    if pairs:
        chain = ", ".join(f"{a} → {b}" for a, b in pairs)
        found.append(_finding(
            "linear_stack", "warning", "missing_nonlinearity",
            f"{len(pairs)} Dense/Conv layer(s) feed another with no activation between them "
            f"({chain}): together they are one linear map (measured on digits: 0.972 vs "
            "0.982 with ReLUs, 0.955 for plain softmax regression)",
            "CS231n: without a nonlinearity between layers, depth adds nothing; put a ReLU "
            "after every hidden Dense/Conv layer", ctx, pairs=[list(p) for p in pairs]))
    rate, where = max_dropout(model)
    if rate > DROPOUT_WARNING:
        found.append(_finding(
            "dropout_rate", "error" if rate > DROPOUT_ERROR else "warning",
            "strong_regularization",
            f"dropout rate {rate:g} in {where}: {rate:.0%} of the units are dropped at every "
            "step (measured on digits: 0.8 → 0.84, 0.9 → 0.09 = chance, 0.5 → 0.98)",
            "CS231n: p = 0.5 is the usual dropout; Keras's rate is the fraction DROPPED",
            ctx, rate=rate, layer=where))
    return found


#: A hidden kernel's std as a multiple of Glorot's sqrt(2 / (fan_in + fan_out)): He init is
#: ~1.4x, LeCun ~1x, BERT's 0.02 on 64-wide layers 0.16x; the lecture's 0.01·randn on
#: 64-wide layers is 0.08x, and its activations vanish within a few tanh layers.
INIT_SCALE_LOW, INIT_SCALE_HIGH = 0.1, 10.0
INIT_COMPOUND = 1e3  # the scales multiplied over the hidden layers: beyond 1e3 (or below
#                      1e-3), the signal shrinks or grows a thousandfold on its way through


def _hidden_kernels(model: keras.Model) -> list[Any]:
    """Dense/Conv layers with a kernel, the output layer left out (in model order)."""
    layers = [layer for layer in models_inspect.walk(model)
              if getattr(layer, "kernel", None) is not None
              and len(layer.kernel.shape) >= 2]
    return layers[:-1]


def _init_scale_checks(model: keras.Model, ctx: causes.Context) -> list[causes.Finding]:
    """Weights far from Xavier/He scale at the start (CS231n lecture 6, weight init).

    Skipped when the network normalizes its activations (batch/layer/group norm makes the
    kernel's scale irrelevant to the signal).
    """
    if not model.built or any("Normalization" in type(layer).__name__
                              for layer in models_inspect.walk(model)):
        return []
    scales = []
    for layer in _hidden_kernels(model):
        k = np.asarray(layer.kernel.numpy(), np.float64)
        fan_in = int(np.prod(k.shape[:-1]))
        fan_out = int(k.shape[-1]) * int(np.prod(k.shape[:-2]) if k.ndim > 2 else 1)
        scales.append((layer.name, float(k.std()) / np.sqrt(2.0 / (fan_in + fan_out))))
    off = [(n, r) for n, r in scales if not INIT_SCALE_LOW <= r <= INIT_SCALE_HIGH]
    if not off:
        return []
    compound = float(np.prod([r for _, r in scales]))
    severe = not 1 / INIT_COMPOUND <= compound <= INIT_COMPOUND
    small = np.median([r for _, r in off]) < 1
    names = ", ".join(f"{n} {r:.2g}x" for n, r in off[:4])
    return [_finding(
        "init_scale", "error" if severe else "warning", "bad_initialization",
        f"{len(off)} of {len(scales)} hidden kernel(s) start at a std far from Glorot's "
        f"sqrt(2/(fan_in+fan_out)) ({names}); over the depth the signal is scaled "
        f"{compound:.2g}x", "CS231n: too small and every activation (and gradient) goes to "
        "0 layer after layer; too large and tanh saturates or ReLU nets explode: use "
        "Xavier/He initialization" if small else "CS231n: too large and tanh saturates, "
        "ReLU nets explode: use Xavier/He initialization", ctx, scales=dict(scales),
        compound=compound)]


# --- learning rate ---------------------------------------------------------------------------


def _rate_of(opt: keras.optimizers.Optimizer) -> float | None:
    """An optimizer's (initial) learning rate; a schedule's ``initial_learning_rate``."""
    lr = opt.get_config().get("learning_rate")
    if isinstance(lr, dict):
        lr = lr.get("config", {}).get("initial_learning_rate")
    try:
        return float(lr)
    except (TypeError, ValueError):
        return None


def _optimizer_facts(model: keras.Model, learning_rate: float | None, optimizer: str
                     ) -> tuple[str, float | None, float]:
    """(name, learning rate, momentum) from the arguments, else the model's compile."""
    opt = model.optimizer if getattr(model, "compiled", False) else None
    opt = getattr(opt, "inner_optimizer", opt)  # LossScaleOptimizer
    name = (optimizer or (type(opt).__name__ if opt is not None else "")).lower()
    lr = learning_rate if learning_rate is not None else (
        _rate_of(opt) if opt is not None else None)
    if isinstance(opt, keras.optimizers.SGD):
        momentum = float(opt.momentum or 0.0)
    else:
        momentum = 0.9 if name in ("momentum", "nesterov") else 0.0
    return name, (float(lr) if lr is not None else None), momentum


def _learning_rate_checks(name: str, lr: float | None, momentum: float,
                          ctx: causes.Context) -> list[causes.Finding]:
    """The learning rate against the range where the optimizer trains (UMLAUT, measured)."""
    family = ("adaptive" if name in ADAPTIVE else "adagrad" if name == "adagrad"
              else "sgd" if name in SGD else "")
    if not family or lr is None or lr <= 0:
        return []
    low, high = LEARNING_RATE_RANGES[family]
    effective = lr / (1.0 - momentum) if family == "sgd" and momentum < 1 else lr
    if low * (1 - 1e-6) <= effective <= high * (1 + 1e-6):  # float32 rates: 0.1 → 0.10000000149
        return []
    high_side = effective > high
    what = f"{name} learning rate {lr:.3g}" + (
        f" (momentum {momentum:g}: effective {effective:.3g})" if effective != lr else "")
    return [_finding(
        "learning_rate_range", "warning",
        "learning_rate_too_high" if high_side else "learning_rate_too_low",
        f"{what} is {'above' if high_side else 'below'} [{low:g}, {high:g}], where {name} "
        "trains a small MLP on digits in 10 epochs" + (
            " (above it the loss jumps or explodes)" if high_side else
            " (below it the loss barely moves)"),
        "lecture 6: loss exploding → lower the learning rate; loss barely changing → raise "
        "it; search it on a log scale", ctx,
        learning_rate=lr, effective=effective, momentum=momentum, low=low, high=high)]


# --- inspect ---------------------------------------------------------------------------------


def inspect(model: keras.Model, x: np.ndarray, y: np.ndarray, *, num_classes: int,
            multilabel: bool = False, loss: Any = None, learning_rate: float | None = None,
            optimizer: str = "", users_model: bool = True,
            context: causes.Context | None = None) -> list[causes.Finding]:
    """The checks before training on a built model and a sample of its data.

    UMLAUT (CHI 2021), DeepDiagnosis (ICSE 2022), CS231n lecture 6: inputs normalized, an
    output layer and loss that match the labels, no linear stacks, sane dropout and rate.

    Args:
        model: the model (compiled or not). Only a forward pass in inference mode runs on
            it (an unbuilt model is cloned first): its weights are never changed.
        x: inputs as the network sees them (after the run's preprocessing); the first
            ``SAMPLE_SIZE`` examples are used.
        y: their labels: ids (N,), one-hot (N, C), 0/1 ids, or a 0/1 (N, K) multi-label matrix.
        num_classes: C classes (K tags when ``multilabel``).
        multilabel: ``y`` holds K independent 0/1 tags.
        loss: the loss the run uses if the model is not compiled with it (a name, a
            ``keras.losses.Loss``, a serialized dict); None: the model's compiled loss, else
            the run's own (which matches the output layer).
        learning_rate: the run's learning rate; None: the compiled optimizer's.
        optimizer: its name (``adam``, ``sgd``, ``momentum``, ...); "": the compiled class.
        users_model: the network is the user's (remedies are model transformations).
        context: the run's settings for the remedies' numbers (dropout and learning rate are
            filled in from the model).

    Returns:
        Findings resolved with ``causes.resolve`` (most serious first).

    Raises:
        ValueError: not a model, no examples, or the forward pass fails.
    """
    return causes.resolve(_inspect(model, x, y, num_classes=num_classes, multilabel=multilabel,
                                   loss=loss, learning_rate=learning_rate, optimizer=optimizer,
                                   users_model=users_model, context=context))


def _inspect(model: keras.Model, x: Any, y: Any, *, num_classes: int, multilabel: bool,
             loss: Any, learning_rate: float | None, optimizer: str, users_model: bool,
             context: causes.Context | None) -> list[causes.Finding]:
    if not isinstance(model, keras.Model):
        raise ValueError(f"model: expected a keras.Model, got {type(model).__name__}")
    x, y = np.asarray(x)[:SAMPLE_SIZE], np.asarray(y)[:SAMPLE_SIZE]
    if not len(x) or len(x) != len(y):
        raise ValueError(f"inspect needs examples with one label each; got x {x.shape}, "
                         f"y {y.shape}")
    if int(num_classes) < (1 if multilabel else 2):
        raise ValueError(f"num_classes must be >= 2 (1 for multi-label), got {num_classes}")
    name, lr, momentum = _optimizer_facts(model, learning_rate, optimizer)
    rate, _ = max_dropout(model)
    ctx = context or causes.Context(users_model=users_model)
    ctx = dataclasses.replace(ctx, dropout=max(ctx.dropout, rate),
                              learning_rate=ctx.learning_rate if lr is None else lr)
    spec = loss if loss is not None else (
        model.loss if getattr(model, "compiled", False) else None)
    y, found = _label_checks(y, ctx)
    found += _input_checks(x, ctx)
    finite = np.isfinite(np.asarray(x, np.float64).reshape(len(x), -1)).all(axis=1)
    if finite.any():
        net = model if model.built else keras.models.clone_model(model)
        out = _forward(net, x[finite])
        found += _output_checks(net, out, y[finite], int(num_classes), multilabel, spec, ctx)
    found += _layer_checks(model, ctx)
    if finite.any():
        found += _init_scale_checks(net, ctx)
    found += _learning_rate_checks(name, lr, momentum, ctx)
    return found


# --- run -------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Sample:
    """What :func:`inspect` gets from a run: the sample, the fresh model and the settings."""

    x: np.ndarray  # inputs as the network sees them
    y: np.ndarray  # labels as the loss receives them
    num_classes: int
    multilabel: bool
    model: keras.Model  # a fresh copy, compiled with the run's loss and optimizer if known
    learning_rate: float | None
    context: causes.Context
    given_y: np.ndarray | None = None  # every training label as given (fit=)


def run(config: Any = None, *, model: Any = None, data: Any = None,
        fit: dict | None = None) -> list[causes.Finding]:
    """The checks before training for a run, from ``recipes.train.run``'s arguments.

    UMLAUT (CHI 2021) and CS231n lecture 6, before the first epoch. The bugs that
    ``prepare`` refuses (output units ≠ classes, a sparse loss on one sigmoid unit, labels
    divided like pixels) come back as findings instead of exceptions.

    Args:
        config: a full or partial config tree, or None (the defaults).
        model: None (``model.arch``), a ``keras.Model`` (a fresh copy is inspected, the
            object is never touched) or a function returning one.
        data: the user's data in ``recipes.data.from_user``'s forms, ``Splits`` or a
            ``dataset.name``; None: ``config.dataset``.
        fit: the user's own ``model.fit`` settings as written (``epochs``, ``batch_size``,
            ``shuffle``, ``validation_split``): the data is inspected as given (no
            preprocessing) and the model as the user compiled it.

    Returns:
        Findings resolved with ``causes.resolve`` (most serious first).

    Raises:
        ValueError: ``model`` or ``data`` is not a model or data at all (or regression
            targets), or a config field is bad.
    """
    source = prepare.model_source(model)
    cfg = configs.complete(config)
    if fit is not None and (not isinstance(fit, dict) or source.kind == "config"):
        raise ValueError("fit= describes the user's own model.fit: a dict of epochs, "
                         "batch_size, shuffle, validation_split, with model= given")
    data, scaled = _relabeled(data)
    ctx = causes.Context(users_model=source.is_users(cfg))
    found = [_scaled_labels_finding(scaled, ctx)] if scaled is not None else []
    bad = _nonfinite(data, ctx)
    if bad and fit is None:
        return causes.resolve(found + bad)  # no preprocessing can be fitted on NaN
    s = _as_given(cfg, source, data, fit) if fit is not None else \
        _as_run(config, cfg, source, model, data)
    found = [dataclasses.replace(f, remedies=causes.remedies(f.cause, s.context))
             for f in found + bad]
    found += _inspect(s.model, s.x, s.y, num_classes=s.num_classes, multilabel=s.multilabel,
                      loss=None, learning_rate=s.learning_rate, optimizer="",
                      users_model=s.context.users_model, context=s.context)
    if fit is not None:
        found += _order_checks(s.given_y, fit, s.context)
    found += _batch_norm_checks(s.model, s.context)
    return causes.resolve(found)


BN_MIN_BATCH = 8  # batch statistics of fewer examples are mostly noise (of 1: all zero)


def _batch_norm_checks(model: keras.Model, ctx: causes.Context) -> list[causes.Finding]:
    """Batch normalization on batches too small to have statistics (Ioffe & Szegedy 2015)."""
    bn = [layer.name for layer in models_inspect.walk(model)
          if isinstance(layer, keras.layers.BatchNormalization)]
    if not bn or ctx.batch_size >= BN_MIN_BATCH:
        return []
    return [_finding(
        "batch_norm_batch", "error" if ctx.batch_size < 2 else "warning", "batch_too_small",
        f"batch size {ctx.batch_size} with {len(bn)} BatchNormalization layer(s) "
        f"({', '.join(bn[:3])}): each step normalizes over {ctx.batch_size} example(s)"
        + (" — one example normalizes to 0 and the layer passes no signal"
           if ctx.batch_size < 2 else ""),
        "batch norm needs batches of a few dozen examples: raise the batch size",
        ctx, batch_size=ctx.batch_size, layers=bn)]


def _arrays(data: Any) -> bool:
    """Whether ``data`` is ``(x, y)`` or ``(x, y, x_test, y_test)`` arrays."""
    return isinstance(data, tuple | list) and len(data) in (2, 4) and not any(
        isinstance(d, tf.data.Dataset) for d in data)


def _relabeled(data: Any) -> tuple[Any, np.ndarray | None]:
    """User arrays whose labels are scaled class ids, relabelled (ids shared by the splits)."""
    if not _arrays(data) or not looks_like_scaled_labels(data[1]):
        return data, None
    return relabel_splits(data), _flat_labels(np.asarray(data[1]))


def relabel_splits(data: tuple | list) -> tuple:
    """``(x, y[, x_test, y_test])`` with every label as its rank among all splits' values.

    The ids are shared by the splits (a value absent from train still gets its own id).

    Raises:
        ValueError: not ``(x, y)`` or ``(x_train, y_train, x_test, y_test)`` arrays.
    """
    if not _arrays(data):
        raise ValueError("relabel: only (x, y) or (x_train, y_train, x_test, y_test) arrays "
                         "can be relabelled; pass class ids 0..C-1 as labels")
    ys = [_flat_labels(np.asarray(data[i])) for i in range(1, len(data), 2)]
    values = np.unique(np.concatenate(ys))
    parts = list(data)
    for i, y in zip(range(1, len(data), 2), ys):
        parts[i] = np.searchsorted(values, y).astype(np.int64)
    return tuple(parts)


def _nonfinite(data: Any, ctx: causes.Context) -> list[causes.Finding]:
    """NaN or inf in the user's training inputs, counted over all of them."""
    if not _arrays(data):
        return []
    x = np.asarray(data[0])
    if not np.issubdtype(x.dtype, np.floating) or np.isfinite(x).all():
        return []
    bad = ~np.isfinite(x.reshape(len(x), -1))
    return [_nonfinite_finding(int(bad.sum()), int(bad.any(axis=1).sum()), len(x), ctx)]


def _sample_index(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=min(n, SAMPLE_SIZE), replace=False))


def _as_run(config: Any, cfg: ml_collections.ConfigDict, source: prepare.ModelSource,
            model: Any, data: Any) -> _Sample:
    """The sample as babysit's run feeds it: preprocessed, labels in the loss's form."""
    splits = prepare.load_splits(cfg, data)
    cfg = prepare.resolve(config, model=model, splits=splits)
    pre = prepare.fit_preprocessor(cfg, splits.train.x)
    shape = pipeline.output_shape(cfg, splits.info.input_shape, pre)
    c, multi = splits.info.num_classes, bool(getattr(splits.info, "multilabel", False))
    keras.utils.set_random_seed(cfg.train.seed)
    net, spec = source.build(cfg, shape, c)
    units = int(_forward(net, np.zeros((2, *shape), np.float32)).shape[-1])
    prepare.init_prior_bias(net, cfg, source, splits)
    own = prepare.model_loss(cfg, spec)
    kind = _task_kind(units, c, multi)
    form = ("multilabel" if multi else "binary" if kind == tasks.BINARY else
            "sparse" if own is not None and tasks.is_sparse_loss(own) else "onehot")
    lr = float(cfg.optimizer.learning_rate)
    prepare.compile_model(net, cfg, num_classes=c, compiled=spec, learning_rate=lr,
                          task=tasks.Task(kind, c, units, tasks.output_activation(net), form))
    idx = _sample_index(len(splits.train), cfg.train.seed)
    batches = list(pipeline.make(splits.train.x[idx], splits.train.y[idx], cfg, training=False,
                                 num_classes=c, preprocessor=pre, label_form=form))
    ctx = causes.Context(learning_rate=lr, batch_size=int(cfg.train.batch_size),
                         epochs=int(cfg.train.epochs), train_size=len(splits.train),
                         users_model=source.is_users(cfg))
    return _Sample(np.concatenate([b[0].numpy() for b in batches]),
                   np.concatenate([b[1].numpy() for b in batches]), c, multi, net, lr, ctx)


def _classes_of(y: np.ndarray) -> tuple[int, bool]:
    """(C, multilabel) of labels as the user gives them to ``fit``."""
    y = _flat_labels(y)
    if y.ndim == 2:
        return int(y.shape[1]), not bool((y.sum(axis=1) == 1).all())
    if y.ndim != 1 or not len(y) or not np.issubdtype(y.dtype, np.number):
        raise ValueError(f"labels of shape {y.shape} and dtype {y.dtype}: expected "
                         f"{data_lib.LABEL_FORMS}")
    if not (np.isfinite(y).all() and (y == np.round(y)).all()) or y.min() < 0:
        raise ValueError("labels hold non-integer or negative values: regression "
                         f"(continuous targets) is not supported; give {data_lib.LABEL_FORMS}")
    return max(int(y.max()) + 1, 2), False


def _given(cfg: ml_collections.ConfigDict, data: Any) -> tuple[Any, np.ndarray]:
    """The training inputs and labels as the user passes them to ``fit``."""
    if _arrays(data):
        x, y = np.asarray(data[0]), np.asarray(data[1])
        if x.ndim < 2 or len(x) != len(y):
            raise ValueError(f"data: x {x.shape} and y {y.shape}: expected one label per "
                             "example")
        return x, y
    splits = prepare.load_splits(cfg, data)  # tf.data pairs, Splits, a dataset name
    return splits.train.x, splits.train.y


def _fresh_compile(net: keras.Model, spec: dict | None) -> None:
    """Compiles ``net`` with a fresh copy of the user's optimizer and their loss."""
    if not spec:
        return
    opt, loss = spec.get("optimizer"), spec.get("loss")
    if isinstance(opt, dict):
        opt = keras.optimizers.deserialize(opt)
    elif isinstance(opt, keras.optimizers.Optimizer):
        opt = type(opt).from_config(opt.get_config())
    if isinstance(loss, dict):
        loss = keras.saving.deserialize_keras_object(loss)
    net.compile(optimizer=opt or "rmsprop", loss=loss)


def _as_given(cfg: ml_collections.ConfigDict, source: prepare.ModelSource, data: Any,
              fit: dict) -> _Sample:
    """The sample as the user's own ``model.fit`` sees it: no preprocessing, labels as given."""
    x, y = _given(cfg, data)
    c, multi = _classes_of(y)
    split = float(fit.get("validation_split") or 0.0)
    n = math.ceil(len(y) * (1 - split)) if 0 < split < 1 else len(y)  # Keras: the first part
    idx = _sample_index(n, cfg.train.seed)
    xs = np.asarray(x[idx], np.float32)
    keep = np.isfinite(xs.reshape(len(xs), -1)).all(axis=1)  # NaN rows: counted in run
    keras.utils.set_random_seed(cfg.train.seed)
    net, spec = source.build(cfg, tuple(x.shape[1:]), c)
    _fresh_compile(net, spec)
    ctx = causes.Context(batch_size=int(fit.get("batch_size") or 32),
                         epochs=int(fit.get("epochs") or 1), train_size=n, users_model=True)
    return _Sample(xs[keep], np.asarray(y)[idx][keep], c, multi, net, None, ctx,
                   given_y=np.asarray(y))


def _order_checks(y: np.ndarray, fit: dict, ctx: causes.Context) -> list[causes.Finding]:
    """Sorted labels under ``shuffle=False`` or ``validation_split`` (Keras cuts the end)."""
    y = _flat_labels(y)
    if y.ndim == 2:
        if not (y.sum(axis=1) == 1).all():
            return []  # multi-label tags: no class order to read
        y = y.argmax(axis=1)
    found = []
    split = float(fit.get("validation_split") or 0.0)
    if 0 < split < 1:
        cut = math.ceil(len(y) * (1 - split))
        seen, held = set(np.unique(y[:cut]).tolist()), set(np.unique(y[cut:]).tolist())
        if held and len(seen - held) > len(seen) / 2:
            found.append(_finding(
                "validation_split_sorted", "warning", "not_shuffled",
                f"validation_split={split:g} holds out the last {len(y) - cut} examples as "
                f"given: classes {sorted(held)[:10]}; {len(seen - held)} of the {len(seen)} "
                f"training classes never reach validation, {len(held - seen)} validation "
                "classes are never trained on: the labels are sorted",
                "shuffle the arrays once before fit (Keras takes the split before shuffling)",
                ctx, split=split, held_classes=len(held), train_classes=len(seen)))
    if fit.get("shuffle", True) is False and len(y) > 1:
        same = float(np.mean(y[1:] == y[:-1]))
        p = np.unique(y, return_counts=True)[1] / len(y)
        if same > SORTED_NEIGHBOURS and same > 3 * float(np.sum(p ** 2)):
            found.append(_finding(
                "sorted_unshuffled", "warning", "not_shuffled",
                f"shuffle=False on sorted labels: {same:.0%} of consecutive examples share a "
                f"class (random order: {np.sum(p ** 2):.0%}); every batch holds one class",
                "lecture 6: shuffle the training data every epoch", ctx,
                same_neighbours=same, random_expected=float(np.sum(p ** 2))))
    return found
